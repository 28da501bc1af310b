#!/usr/bin/env bash
# Client-level DP where it can work: many clients. Synthetic data, 191 training-subject clients
# (20 windows each, RATE % labeled, default 20) and 10 held-out subjects; 5 stage-1 rounds of 1 local
# epoch, stage 2 federated S2_ROUNDS rounds (default 5) of S2_EPOCHS local epochs (default 2); DP off,
# then each noise multiplier (clip norm $CLIP, default 1). EXTRA: more Hydra overrides (e.g. a
# smaller model: fewer released parameters), TAG names the cells' folder.
# Usage: [CLIP=1.0] [RATE=20] [S2_ROUNDS=5] [S2_EPOCHS=2] [EXTRA="..."] [TAG=name]
#        bash benchmarks/privacy/synthetic_many_clients.sh OUT [noise multipliers, default: off 1.0]
set -euo pipefail
out=${1:?usage: synthetic_many_clients.sh OUT [noise multipliers...]}
shift
noises=("$@")
[[ ${#noises[@]} -eq 0 ]] && noises=(off 1.0)
clip=${CLIP:-1.0}
clients=191
data="dataset=synthetic dataset.preprocess.num_subjects=201 dataset.preprocess.num_classes=5 \
dataset.preprocess.samples_per_subject_class=4 dataset.protocols.default.test_subjects=[$(seq -s, 192 201)] \
label_rate=${RATE:-20} model=compact federation.stage1_rounds=5 federation.stage1_local_epochs=1 \
federation.stage2_mode=federated federation.stage2_rounds=${S2_ROUNDS:-5} \
federation.stage2_local_epochs=${S2_EPOCHS:-2} \
federation.eval_every=5 federation.client_eval=false federation.node_wait_s=900 \
privacy.dp.clip_norm=$clip privacy.dp.noise_seed=0 ${EXTRA:-}"
source "$(dirname "$0")/cells.sh"
run_cells "$out/synthetic$clients${TAG:+-$TAG}-c$clip" 20 "num-supernodes=$clients client-resources-num-cpus=1" "$data" \
  "${noises[@]}"
python - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = []
for path in sorted(out.glob("synthetic*-z*/runs/*/results.json")):
    r = json.loads(path.read_text())
    dp = (r.get("privacy") or {}).get("dp")
    fed = r["config"]["federation"]
    rows.append({"cell": path.parts[-4], "clients": len(r["train_subjects"]), "label_rate": r["config"]["label_rate"],
                 "stage1_rounds": fed["stage1_rounds"], "stage2_rounds": fed["stage2_rounds"],
                 "stage2_local_epochs": fed["stage2_local_epochs"],
                 "noise_multiplier": dp["noise_multiplier"] if dp else None,
                 "noise_std": dp["noise_std"] if dp else None, "epsilon": dp["epsilon"] if dp else None,
                 "delta": dp["delta"] if dp else None, "accuracy": 100 * r["final"]["accuracy"],
                 "macro_f1": 100 * r["final"]["macro_f1"], "wall_time_s": r["wall_time_s"]})
(out / "summary.json").write_text(json.dumps({"rows": rows}, indent=1))
lines = ["| cell | clients | labels % | rounds (stage 1 + 2 x epochs) | noise multiplier | noise std | epsilon (delta 1e-5) | "
         "accuracy % | macro-F1 % | server wall s |", "|---|---|---|---|---|---|---|---|---|---|"]
for row in rows:
    eps = "∞ (no DP)" if row["epsilon"] is None else f"{row['epsilon']:.3g}"
    z = "—" if row["noise_multiplier"] is None else f"{row['noise_multiplier']:.4g}"
    std = "—" if row["noise_std"] is None else f"{row['noise_std']:.3g}"
    lines.append(f"| {row['cell']} | {row['clients']} | {row['label_rate']} | {row['stage1_rounds']} + "
                 f"{row['stage2_rounds']} x {row['stage2_local_epochs']} | {z} | {std} | {eps} | {row['accuracy']:.1f} | "
                 f"{row['macro_f1']:.1f} | {row['wall_time_s']:.0f} |")
(out / "table.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
