# Sourced by the privacy benchmarks: one real `flwr run` per noise level, each with its own
# output folder, FLWR_HOME and ports, and its local SuperLink stopped afterwards (Flower leaves
# it running, and the next cell's run would join it and write into its folder).
# run_cells PREFIX PORT_OFFSET FEDERATION_CONFIG OVERRIDES NOISE...   ("off": the run without DP;
# "eps<E>": the noise calibrated to spend epsilon E over the run (privacy.dp.target_epsilon);
# $RUN_CONFIG, if set, is passed as one more --run-config). A cell with results is skipped.
run_cells() {
  local prefix=$1 port=$2 federation=$3 overrides=$4
  shift 4
  local i=0 z cell dp
  for z in "$@"; do
    cell="$prefix-z$z"
    mkdir -p "$cell"
    if ls "$cell"/runs/*/results.json > /dev/null 2>&1; then i=$((i + 1)); continue; fi
    dp="privacy.dp.enabled=true privacy.dp.noise_multiplier=$z"
    [[ $z == eps* ]] && dp="privacy.dp.enabled=true privacy.dp.target_epsilon=${z#eps}"
    [[ $z == off ]] && dp=""
    FEDHAR_OUTPUT_DIR="$cell/runs" FLWR_HOME="$cell/flwr-home" \
      FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=$((39800 + port + i)) FLWR_LOCAL_CONTROL_API_PORT=$((39900 + port + i)) \
      python -m simulations.run_federated . ${RUN_CONFIG:+--run-config "$RUN_CONFIG"} \
      --run-config "hydra-overrides=\"$overrides $dp\"" --federation-config "$federation" --timeout 3000 \
      > "$cell/log" 2>&1 || true
    grep -h "fedhar run\|differential privacy" "$cell/log" | tail -2
    i=$((i + 1))
  done
}
