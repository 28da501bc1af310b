#!/usr/bin/env bash
# Client-level DP where it can work: many clients. Synthetic data, 191 training-subject clients
# (20 windows each, 20 % labeled) and 10 held-out subjects; 5 stage-1 rounds of 1 local epoch, stage 2
# federated 5 rounds of 2; DP off, then each noise multiplier (clip norm $CLIP, default 1).
# Usage: [CLIP=1.0] bash benchmarks/privacy/synthetic_many_clients.sh OUT [noise multipliers, default: off 1.0]
set -euo pipefail
out=${1:?usage: synthetic_many_clients.sh OUT [noise multipliers...]}
shift
noises=("$@")
[[ ${#noises[@]} -eq 0 ]] && noises=(off 1.0)
clip=${CLIP:-1.0}
clients=191
data="dataset=synthetic dataset.preprocess.num_subjects=201 dataset.preprocess.num_classes=5 \
dataset.preprocess.samples_per_subject_class=4 dataset.protocols.default.test_subjects=[$(seq -s, 192 201)] \
label_rate=20 model=compact federation.stage1_rounds=5 federation.stage1_local_epochs=1 \
federation.stage2_mode=federated federation.stage2_rounds=5 federation.stage2_local_epochs=2 \
federation.eval_every=5 federation.client_eval=false federation.node_wait_s=900 \
privacy.dp.clip_norm=$clip privacy.dp.noise_seed=0"
i=0
for z in "${noises[@]}"; do
  cell="$out/synthetic$clients-c$clip-z$z"
  mkdir -p "$cell"
  dp="privacy.dp.enabled=true privacy.dp.noise_multiplier=$z"
  [[ $z == off ]] && dp=""
  FEDHAR_OUTPUT_DIR="$cell/runs" FLWR_HOME="$cell/flwr-home" \
    FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=$((39820 + i)) FLWR_LOCAL_CONTROL_API_PORT=$((39920 + i)) \
    python -m simulations.run_federated . --run-config "hydra-overrides=\"$data $dp\"" \
    --federation-config "num-supernodes=$clients client-resources-num-cpus=1" --timeout 3000 > "$cell/log" 2>&1 || true
  grep -h "fedhar run\|differential privacy" "$cell/log" | tail -2
  python -c "import sys; from pathlib import Path; from simulations.run_federated import stop_superlink; stop_superlink(Path(sys.argv[1]))" "$cell/flwr-home"
  i=$((i + 1))
done
