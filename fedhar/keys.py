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
