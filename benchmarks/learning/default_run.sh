#!/usr/bin/env bash
# The README's main job (configs/federated.yaml defaults: 6 clients, 6 x 4 stage-1 rounds,
# stage 2 lda) on UTD-MHAD 5 % and 10 %, seeds 0-2, each a real `flwr run` with its own
# FLWR_HOME and ports; then summary.json / table.md of the finished runs.
# Usage: bash benchmarks/learning/default_run.sh OUT [extra run-config, e.g. 'hydra-overrides="..."']
set -euo pipefail
out=${1:?usage: default_run.sh OUT [run-config]}
extra=${2:-}
for rate in 5 10; do
  for seed in 0 1 2; do
    cell="$out/lr$rate-seed$seed"
    mkdir -p "$cell"
    args=(--run-config "seed=$seed label-rate=$rate")
    [[ -n "$extra" ]] && args+=(--run-config "$extra")
    FEDHAR_OUTPUT_DIR="$cell/runs" FLWR_HOME="$cell/flwr-home" \
      FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=$((39500 + rate * 10 + seed)) FLWR_LOCAL_CONTROL_API_PORT=$((39700 + rate * 10 + seed)) \
      python -m simulations.run_federated . "${args[@]}" \
      --federation-config "num-supernodes=6 client-resources-num-cpus=1" > "$cell/log" 2>&1
    grep -h "fedhar run" "$cell/log" | tail -1
  done
done
python -m simulations.run_summary --out "$out" "$out"/lr*-seed*/runs/*/results.json
