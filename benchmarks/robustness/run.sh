#!/usr/bin/env bash
# Robustness of the default federated run (UTD-MHAD 5 %, seed 0, 6 clients, 6 x 4 stage-1
# rounds, stage 2 lda): client failures per round and one hostile client, with and without
# the defences (docs/federated.md, "Failures and hostile clients"). Each variant is one real
# `flwr run`; summary.json / table.md at the end.
# Usage: bash benchmarks/robustness/run.sh OUT [seed] [variant ...]  (default: every variant)
set -euo pipefail
out=${1:?usage: run.sh OUT [seed] [variant ...]}
seed=${2:-0}
shift $(( $# < 2 ? $# : 2 ))
declare -A variants=(
  [clean]=""
  [fail-10]="federation.inject_failures.fraction=0.1"
  [fail-30]="federation.inject_failures.fraction=0.3"
  [fail-50]="federation.inject_failures.fraction=0.5"
  [hang-30]="federation.inject_failures.fraction=0.3 federation.inject_failures.kind=hang federation.inject_failures.hang_s=90 federation.round_timeout_s=45"
  [slots-clean]="federation.round_timeout_s=60"
  [slots-hang-10]="federation.inject_failures.fraction=0.1 federation.inject_failures.kind=hang federation.inject_failures.hang_s=120 federation.round_timeout_s=60"
  [slots-hang-30]="federation.inject_failures.fraction=0.3 federation.inject_failures.kind=hang federation.inject_failures.hang_s=120 federation.round_timeout_s=60"
  [slots-drop-10]="federation.inject_failures.fraction=0.1 federation.inject_failures.kind=drop federation.inject_failures.hang_s=120 federation.round_timeout_s=60"
  [slots-hang-50]="federation.inject_failures.fraction=0.5 federation.inject_failures.kind=hang federation.inject_failures.hang_s=120 federation.round_timeout_s=60"
  [scale-1000-undefended]="federation.inject_attack.subject=3 strategy.bounds.update_clip=null"
  [scale-1000-clipped]="federation.inject_attack.subject=3"
  [flip-10-undefended]="federation.inject_attack.subject=3 federation.inject_attack.kind=sign_flip federation.inject_attack.factor=10 strategy.bounds.update_clip=null"
  [flip-10-clipped]="federation.inject_attack.subject=3 federation.inject_attack.kind=sign_flip federation.inject_attack.factor=10"
  [flip-10-median]="federation.inject_attack.subject=3 federation.inject_attack.kind=sign_flip federation.inject_attack.factor=10 strategy.bounds.rule=median"
)
# slots-*: Ray told of 12 CPUs (init-args-num-cpus; Flower takes whole CPUs per client), so 12
# slots on a 2-core machine: a hanging client
# holds one slot and the other clients still run (with one CPU each, 6 clients share 2 slots
# and a hang stalls the whole simulation: BENCHMARKS.md §3.4).
all=(clean fail-10 fail-30 fail-50 hang-30 slots-clean slots-hang-10 slots-hang-30 slots-hang-50 slots-drop-10 scale-1000-undefended scale-1000-clipped flip-10-undefended flip-10-clipped flip-10-median)
chosen=("${@:-${all[@]}}")
port=39800
for name in "${all[@]}"; do
  port=$((port + 2))
  [[ " ${chosen[*]} " == *" $name "* ]] || continue
  resources="client-resources-num-cpus=1"
  [[ $name == slots-* ]] && resources="client-resources-num-cpus=1 init-args-num-cpus=12"
  cell="$out/$name"
  mkdir -p "$cell"
  if ! ls "$cell"/runs/*/results.json > /dev/null 2>&1; then
    FEDHAR_OUTPUT_DIR="$cell/runs" FLWR_HOME="$cell/flwr-home" FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=$port \
      FLWR_LOCAL_CONTROL_API_PORT=$((port + 1)) python -m simulations.run_federated . --run-config "seed=$seed" \
      --run-config "hydra-overrides=\"${variants[$name]}\"" \
      --federation-config "num-supernodes=6 $resources" > "$cell/log" 2>&1 || true
  fi
  echo "$name: $(tail -1 "$cell/log")"
done
python - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = []
for cell in sorted(p for p in out.iterdir() if p.is_dir()):
    found = sorted(cell.glob("runs/*/results.json"))
    if not found:
        rows.append({"variant": cell.name, "failed": (cell / "log").read_text().strip().splitlines()[-1]})
        continue
    r = json.loads(found[-1].read_text())
    rounds = r["stage1"]["rounds"].values()
    rows.append({"variant": cell.name, "accuracy": 100 * r["final"]["accuracy"], "macro_f1": 100 * r["final"]["macro_f1"],
                 "stage1_failed_rounds": len(r["stage1"].get("failed_rounds", {})),
                 "replies_rejected": sum(int(m.get("num-rejected", 0)) for m in rounds),
                 "replies_timed_out": sum(int(m.get("num-timeouts", 0)) for m in rounds),
                 "wall_time_s": r.get("wall_time_s"),
                 "updates_clipped": sum(int(m.get("num-clipped", 0)) for m in rounds),
                 "probe_accuracy_last": 100 * max(r["stage1"]["central"].items(), key=lambda kv: int(kv[0]))[1]["probe-accuracy"]})
(out / "summary.json").write_text(json.dumps({"rows": rows}, indent=2))
lines = ["| variant | accuracy % | macro-F1 % | stage-1 rounds failed | replies rejected | replies timed out | updates clipped | stage-1 probe % | server s |",
         "|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    if "failed" in r:
        lines.append(f"| {r['variant']} | run failed: {r['failed']} | | | | | | | |")
    else:
        lines.append(f"| {r['variant']} | {r['accuracy']:.1f} | {r['macro_f1']:.1f} | {r['stage1_failed_rounds']} | "
                     f"{r['replies_rejected']} | {r['replies_timed_out']} | {r['updates_clipped']} | "
                     f"{r['probe_accuracy_last']:.1f} | {r['wall_time_s']:.0f} |")
(out / "table.md").write_text("\n".join(lines) + "\n")
print("\n".join(lines))
PY
