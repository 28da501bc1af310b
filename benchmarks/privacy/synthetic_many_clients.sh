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
