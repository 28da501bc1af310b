#!/usr/bin/env bash
# Client-level DP (privacy.dp) on the default federated run with stage 2 `federated` (the
# modes DP covers): DP off, then each noise multiplier; UTD-MHAD, one label rate and seed per
# call. Each cell is a real `flwr run` with its own FLWR_HOME and ports; summary.json and
# table.md hold accuracy, macro-F1 and epsilon (delta 1e-5) per cell.
# Usage: [CLIP=1.0] bash benchmarks/privacy/run.sh OUT [label rate, default 5] [seed, default 0] [noise multipliers...]
set -euo pipefail
out=${1:?usage: run.sh OUT [rate] [seed] [noise multipliers...]}
rate=${2:-5}
seed=${3:-0}
shift $(( $# < 3 ? $# : 3 ))
noises=("$@")
[[ ${#noises[@]} -eq 0 ]] && noises=(off 0.001 0.01 0.1)  # "off": the same run without DP
clip=${CLIP:-1.0}  # privacy.dp.clip_norm (env CLIP)
base="federation.stage2_mode=federated privacy.dp.clip_norm=$clip privacy.dp.noise_seed=$seed"
source "$(dirname "$0")/cells.sh"
RUN_CONFIG="seed=$seed label-rate=$rate" run_cells "$out/lr$rate-seed$seed-c$clip" 0 \
  "num-supernodes=6 client-resources-num-cpus=1" "$base" "${noises[@]}"
python - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = []
for path in sorted(out.glob("lr*-seed*-z*/runs/*/results.json")):
    r = json.loads(path.read_text())
    dp = (r.get("privacy") or {}).get("dp")
    rows.append({"cell": path.parts[-4], "label_rate": r["config"]["label_rate"], "seed": r["config"]["seed"],
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
    lines.append(f"| {row['cell']} | {row['noise_multiplier'] or '—'} | {row['noise_std'] or '—'} | {eps} | "
                 f"{row['accuracy']:.1f} | {row['macro_f1']:.1f} | {row['wall_time_s']:.0f} |")
(out / "table.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
