#!/usr/bin/env bash
# Client-level DP (privacy.dp) on the default federated run with stage 2 `federated` (the
# modes DP covers): DP off, then each noise multiplier (or eps<E>: the multiplier that spends
# epsilon E over the run); one dataset (env DATASET, default utd-mhad), label rate and seed per
# call. Each cell is a real `flwr run` with its own FLWR_HOME and ports; summary.json and
# table.md hold accuracy, macro-F1 and epsilon (delta 1e-5) of every cell under OUT.
# Usage: [CLIP=1.0] [DATASET=usc-had] bash benchmarks/privacy/run.sh OUT [label rate, default 5] [seed, default 0] [noise...]
set -euo pipefail
out=${1:?usage: run.sh OUT [rate] [seed] [noise multipliers...]}
rate=${2:-5}
seed=${3:-0}
shift $(( $# < 3 ? $# : 3 ))
noises=("$@")
[[ ${#noises[@]} -eq 0 ]] && noises=(off 0.001 0.01 0.1)  # "off": the same run without DP
clip=${CLIP:-1.0}  # privacy.dp.clip_norm (env CLIP)
dataset=${DATASET:-utd-mhad}
clients=6
[[ $dataset == usc-had ]] && clients=12
base="dataset=$dataset federation.stage2_mode=federated privacy.dp.clip_norm=$clip privacy.dp.noise_seed=$seed"
source "$(dirname "$0")/cells.sh"
prefix="$out/lr$rate-seed$seed-c$clip"
[[ $dataset != utd-mhad ]] && prefix="$out/$dataset-lr$rate-seed$seed-c$clip"
RUN_CONFIG="seed=$seed label-rate=$rate" run_cells "$prefix" 0 \
  "num-supernodes=$clients client-resources-num-cpus=1" "$base" "${noises[@]}"
python - "$out" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = []
for path in sorted(out.glob("*lr*-seed*-z*/runs/*/results.json")):
    r = json.loads(path.read_text())
    dp = (r.get("privacy") or {}).get("dp")
    rows.append({"cell": path.parts[-4], "dataset": r["config"]["dataset"]["name"],
                 "label_rate": r["config"]["label_rate"], "seed": r["config"]["seed"],
                 "target_epsilon": dp.get("target_epsilon") if dp else None,
                 "noise_multiplier": dp["noise_multiplier"] if dp else None,
                 "clip_norm": dp["clip_norm"] if dp else None, "noise_std": dp["noise_std"] if dp else None,
                 "epsilon": dp["epsilon"] if dp else None, "delta": dp["delta"] if dp else None,
                 "accuracy": 100 * r["final"]["accuracy"], "macro_f1": 100 * r["final"]["macro_f1"],
                 "wall_time_s": r["wall_time_s"]})
(out / "summary.json").write_text(json.dumps({"rows": rows}, indent=1))
lines = ["| cell | noise multiplier | noise std | epsilon (delta 1e-5) | accuracy % | macro-F1 % | server wall s |",
         "|---|---|---|---|---|---|---|"]
for row in rows:
    eps = "∞ (no DP)" if row["epsilon"] is None else f"{row['epsilon']:.3g}"
    z = "—" if row["noise_multiplier"] is None else f"{row['noise_multiplier']:.4g}"
    std = "—" if row["noise_std"] is None else f"{row['noise_std']:.3g}"
    lines.append(f"| {row['cell']} | {z} | {std} | {eps} | {row['accuracy']:.1f} | {row['macro_f1']:.1f} | "
                 f"{row['wall_time_s']:.0f} |")
# Mean ± std over seeds per (dataset, label rate, setting).
groups = {}
for row in rows:
    setting = row["cell"].rsplit("-z", 1)[1]
    groups.setdefault((row["dataset"], row["label_rate"], setting), []).append(row)
lines += ["", "| dataset | label rate % | setting | seeds | epsilon | accuracy % | macro-F1 % |", "|---|---|---|---|---|---|---|"]
for (dataset, rate, setting), cells in sorted(groups.items()):
    acc = [c["accuracy"] for c in cells]
    f1 = [c["macro_f1"] for c in cells]
    eps = cells[0]["epsilon"]
    sd = lambda v: statistics.stdev(v) if len(v) > 1 else 0.0
    lines.append(f"| {dataset} | {rate} | {setting} | {len(cells)} | {'∞' if eps is None else f'{eps:.3g}'} | "
                 f"{statistics.mean(acc):.1f} ± {sd(acc):.1f} | {statistics.mean(f1):.1f} ± {sd(f1):.1f} |")
(out / "table.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
