#!/usr/bin/env bash
# Cost of secure aggregation (privacy.secure_aggregation, SecAgg+): the default federated run
# with stage 2 `federated` (plain, secure, ...) or the default `lda` (lda, secure-lda, ...),
# UTD-MHAD, 6 clients, with and without secure aggregation, and with one or two clients
# (subjects 3; 3 and 5) failing in every training round after the key exchange ("dropping out
# mid-round": their masks are removed through the others' shares). Each cell is one real `flwr run`; summary.json / table.md hold accuracy, wall time per
# round and bytes per client and round, per stage.
# Usage: [DATASET=usc-had] bash benchmarks/privacy/secure_aggregation.sh OUT [label rate, default 5] [seed, default 0] [cell ...]
set -euo pipefail
out=${1:?usage: secure_aggregation.sh OUT [rate] [seed] [cell ...]}
rate=${2:-5}
seed=${3:-0}
shift $(( $# < 3 ? $# : 3 ))
dataset=${DATASET:-utd-mhad}  # env DATASET=usc-had: 12 clients
clients=6
[[ $dataset == usc-had ]] && clients=12
setting="lr$rate-seed$seed"
[[ $dataset != utd-mhad ]] && setting="$dataset-$setting"
base="dataset=$dataset federation.stage2_mode=federated"
secure="dataset=$dataset privacy.secure_aggregation.enabled=true"
quiet_dp="privacy.dp.enabled=true privacy.dp.noise_multiplier=0.000001 privacy.dp.clip_norm=1000 privacy.dp.noise_seed=$seed"
eps8_dp="privacy.dp.enabled=true privacy.dp.target_epsilon=8 privacy.dp.clip_norm=1 privacy.dp.noise_seed=$seed"
declare -A cells=(
  [plain]="$base"
  [secure]="$base $secure"
  [secure-drop-1]="$base $secure federation.inject_failures.subjects=[3]"
  [secure-drop-2]="$base $secure federation.inject_failures.subjects=[3,5]"
  [plain-drop-2]="$base federation.inject_failures.subjects=[3,5]"
  [lda]="dataset=$dataset"
  [secure-lda]="$secure"
  [secure-lda-drop-2]="$secure federation.inject_failures.subjects=[3,5]"
  [lda-attack]="dataset=$dataset federation.inject_attack.subject=3"
  [secure-lda-attack]="$secure federation.inject_attack.subject=3"
  [dp]="$base $quiet_dp"
  [secure-dp]="$base $secure $quiet_dp"
  [dp-eps8]="$base $eps8_dp"
  [secure-dp-eps8]="$base $secure $eps8_dp"
)
# dp / secure-dp: DP with noise and clipping made negligible (noise multiplier 1e-6, clip norm 1000), so
# the two paths can be compared on accuracy: the server clips and noises (dp) or the clients clip and the
# server noises the unmasked sum (secure-dp). *-eps8: the noise that spends epsilon 8 over the run.
# *-attack: subject 3 sends global + 1000 x its update in every stage-1 round (BENCHMARKS.md §3.4):
# the plain server clips it against the round's median; under secure aggregation it cannot.
all=(plain secure secure-drop-1 secure-drop-2 plain-drop-2 lda secure-lda secure-lda-drop-2 lda-attack secure-lda-attack
     dp secure-dp dp-eps8 secure-dp-eps8)
chosen=("${@:-${all[@]}}")
port=39700
for name in "${all[@]}"; do
  port=$((port + 2))
  [[ " ${chosen[*]} " == *" $name "* ]] || continue
  cell="$out/$setting/$name"
  mkdir -p "$cell"
  if ! ls "$cell"/runs/*/results.json > /dev/null 2>&1; then
    FEDHAR_OUTPUT_DIR="$cell/runs" FLWR_HOME="$cell/flwr-home" FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=$port \
      FLWR_LOCAL_CONTROL_API_PORT=$((port + 1)) python -m simulations.run_federated . \
      --run-config "seed=$seed label-rate=$rate" --run-config "hydra-overrides=\"${cells[$name]}\"" \
      --federation-config "num-supernodes=$clients client-resources-num-cpus=1" --timeout 3000 > "$cell/log" 2>&1 || true
  fi
  echo "$name: $(tail -1 "$cell/log")"
done
python - "$out" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = []
for path in sorted(out.glob("*lr*-seed*/*/runs/*/results.json")):
    r = json.loads(path.read_text())
    row = {"cell": path.parts[-4], "setting": path.parts[-5], "accuracy": 100 * r["final"]["accuracy"],
           "macro_f1": 100 * r["final"]["macro_f1"], "wall_time_s": r["wall_time_s"],
           # the normalisation round (a census and a secure sum of the moments under secure aggregation)
           "norm_round_s": r.get("phases_s", {}).get("normalisation_round"),
           "norm_secure_sum": r["normalization"].get("secure_sum", False),
           "dp_epsilon": ((r.get("privacy") or {}).get("dp") or {}).get("epsilon")}
    for stage in ("stage1", "stage2"):
        s = r[stage]
        if "class_stats" in s:  # lda / ccvr: one class-statistics round
            row[stage] = {"round_wall_s": s["wall_s"], "mb_down_per_client_round": s["bytes_down_per_client_round"] / 1e6,
                          "mb_up_per_client_round": s["bytes_up_per_client_round"] / 1e6, "failed_rounds": 0,
                          "summed_per_round": [s["class_stats"]["num_merged"]]}
            continue
        secure = s.get("secure_aggregation") or {}
        row[stage] = {"round_wall_s": statistics.mean(s["round_wall_s"]) if s["round_wall_s"] else None,
                      "mb_down_per_client_round": s["bytes_down_per_client_round"] / 1e6,
                      "mb_up_per_client_round": s["bytes_up_per_client_round"] / 1e6,
                      "failed_rounds": len(s["failed_rounds"]),
                      "summed_per_round": sorted({v.get("num_summed", 0) for v in secure.values()}) or None}
    rows.append(row)
(out / "summary.json").write_text(json.dumps({"rows": rows}, indent=1))
lines = ["| setting | cell | accuracy % | macro-F1 % | DP epsilon (delta 1e-5) | normalisation round s (secure sum) | stage-1 s/round | stage-2 s/round | stage-1 MB down / up per client round | stage-2 MB down / up | clients summed | failed rounds |",
         "|---|---|---|---|---|---|---|---|---|---|---|---|"]
for row in rows:
    s1, s2 = row["stage1"], row["stage2"]
    norm = "—" if row["norm_round_s"] is None else f"{row['norm_round_s']:.1f} ({'yes' if row['norm_secure_sum'] else 'no'})"
    eps = "—" if row["dp_epsilon"] is None else f"{row['dp_epsilon']:.3g}"
    lines.append(f"| {row['setting']} | {row['cell']} | {row['accuracy']:.1f} | {row['macro_f1']:.1f} | {eps} | {norm} | "
                 f"{s1['round_wall_s']:.1f} | {s2['round_wall_s']:.1f} | "
                 f"{s1['mb_down_per_client_round']:.2f} / {s1['mb_up_per_client_round']:.2f} | "
                 f"{s2['mb_down_per_client_round']:.3f} / {s2['mb_up_per_client_round']:.3f} | "
                 f"{s1['summed_per_round'] or '—'} | {s1['failed_rounds']} + {s2['failed_rounds']} |")
(out / "table.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
