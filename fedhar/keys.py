"""Record, run-config and node-config keys shared by clients and strategies (kebab-case)."""

# Node config (simulation: partition-id / num-partitions; deployment: subject-id / data-path).
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
SUBJECT_ID = "subject-id"
DATA_PATH = "data-path"

# Run config.
HYDRA_OVERRIDES = "hydra-overrides"

# Message record names.
ARRAYS = "arrays"
METRICS = "metrics"
CONFIG = "config"

# Metric keys.
NUM_EXAMPLES = "num-examples"
TRAIN_LOSS = "train-loss"
QOM_PREFIX = "qom-"  # followed by the modality name, e.g. "qom-skeleton"
ACCURACY = "accuracy"
MACRO_F1 = "macro-f1"

# Parameter-name prefixes: a state_dict key "encoders.<modality>.…" or "heads.<modality>.…"
# belongs to that modality; anything else is shared by all clients.
ENCODER_PREFIX = "encoders."
HEAD_PREFIX = "heads."

# Federated layer (strategies/, clients/): stage, per-round metrics, client config.
STAGE = "stage"  # ConfigRecord: "pretrain" or "finetune"
SERVER_ROUND = "server-round"  # set by Flower's strategies
SUBJECT = "subject-id"  # also a reply metric: the client's subject, a stable id across runs
NUM_REJECTED = "num-rejected"
NUM_FAILURES = "num-failures"
NUM_AGGREGATED = "num-aggregated"
WEIGHT_PREFIX = "weight-"  # "weight-<group>-subject-<id>": a client's normalised weight for a group
QOM_PRIOR_PREFIX = "qom-prior-"  # ConfigRecord: global normalised QoM prior per modality
SETUP = "setup"  # ConfigRecord: JSON of the resolved static config (dataset, model, stage1, stage2, quality)
FREEZE_ENCODERS = "freeze-encoders"  # ConfigRecord: stage 2 trains only the classifier (encoders stay global)
LOCAL_EPOCHS = "local-epochs"  # ConfigRecord: epochs each client trains per round
SEED = "seed"  # ConfigRecord: the run's seed (clients derive theirs from seed, subject, round)
STATE_QOM = "qom"  # context.state MetricRecord: the client's QoM scores, computed once
