"""Record, run-config and node-config keys shared by clients and strategies (kebab-case)."""

# Node config (simulation: partition-id / num-partitions; deployment: subject-id / data-path;
# either: device, the torch device this node trains on: cpu (default), cuda, cuda:N or auto).
PARTITION_ID = "partition-id"
NUM_PARTITIONS = "num-partitions"
SUBJECT_ID = "subject-id"
DATA_PATH = "data-path"
DEVICE = "device"

# Run config.
HYDRA_OVERRIDES = "hydra-overrides"
RESUME = "resume"  # the run id (folder name) of a killed run to continue; "" starts a new run

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
NUM_TIMEOUTS = "num-timeouts"  # instructions sent that got no reply within the round timeout
NUM_CLIPPED = "num-clipped"  # replies whose update norm was clipped in some group
QOM_PRIOR_PREFIX = "qom-prior-"  # ConfigRecord: global normalised QoM prior per modality
SETUP = "setup"  # ConfigRecord: JSON of the resolved static config (dataset, model, stage1, stage2, quality)
FREEZE_ENCODERS = "freeze-encoders"  # ConfigRecord: stage 2 trains only the classifier (encoders stay global)
LOCAL_EPOCHS = "local-epochs"  # ConfigRecord: epochs each client trains per round
SEED = "seed"  # ConfigRecord: the run's seed (clients derive theirs from seed, subject, round)
STATE_QOM = "qom"  # context.state MetricRecord: the client's QoM scores, computed once

# Normalisation round (before stage 1): the server queries every client's data summary.
NORM_STATS_ACTION = "norm_stats"  # message type "query.norm_stats" (an action must be a Python identifier)
NORM_STATS = "norm-stats"  # reply ArrayRecord of the client's moments; ConfigRecord: JSON of the merged NormStats
LABEL_SHARE = "label-share"  # ConfigRecord, per node: JSON of the client's own share of the label split
TRAIN_SUBJECTS = "train-subjects"  # ConfigRecord: the protocol's training subjects (partition-id -> subject)
CLASS_COUNTS = "class-counts"  # reply array: (num_classes,) rows of each class on the client
COUNT_SUFFIX = ".count"  # reply array "<modality>.count": (1,) values per channel
SUM_SUFFIX = ".sum"  # reply array "<modality>.sum": (C,) sum per channel
SUM_SQ_SUFFIX = ".sum-sq"  # reply array "<modality>.sum-sq": (C,) sum of squares per channel
CENSUS_ONLY = "census-only"  # ConfigRecord: reply class counts and value counts only (the sums go through secagg)

# Stage 2 from class statistics (federation.stage2_mode lda / ccvr): the server queries each
# client's per-class feature statistics under the global encoders.
CLASS_STATS_ACTION = "class_stats"  # message type "query.class_stats"
CLASS_STATS = "class-stats"  # reply ArrayRecord: counts (K,), sums (K, D), scatter (D, D)
CLASS_STATS_PASSES = "class-stats-passes"  # ConfigRecord: augmented passes per labeled row besides the clean one
# Personalisation after the lda head (federation.class_stats.personalise): the server sends the
# merged statistics; each client fits its personal head and reports accuracy on its own held-out rows.
PERSONALISE_ACTION = "personalise"  # message type "query.personalise"
GLOBAL_STATS = "global-stats"  # ArrayRecord: the merged class statistics (counts, sums, scatter)
PERSONAL_HEAD = "personal-head"  # reply ArrayRecord: weight (K, D), bias (K,) of the personal linear head
PERSONAL_STRENGTH = "personal-strength"  # ConfigRecord: weight of the global mean, in rows
SHRINKAGE = "class-stats-shrinkage"  # ConfigRecord: covariance shrinkage of the lda heads
OWN_SUFFIX_GLOBAL = "-global"  # reply metrics "accuracy-global", "macro-f1-global": the global head on own rows
OWN_SUFFIX_PERSONAL = "-personal"  # reply metrics "accuracy-personal", "macro-f1-personal": the personal head

# Secure aggregation (privacy.secure_aggregation): each collect-stage train message carries how
# the client weights its contribution (fedhar.secure_sum).
SECAGG_WEIGHTING = "secagg-weighting"  # ConfigRecord of the collect message
EXAMPLE_SCALE = "example-scale"  # n_k / n_max from the counts the server knows
WEIGHTING = "weighting"  # "qom" or "examples"
QOM_LOW = "qom-low"  # the strategy's quality range the client clips its scores to
QOM_HIGH = "qom-high"
SECAGG_CLASS_STATS = "secagg-class-stats"  # ConfigRecord of a secure class-statistics query
ROW_SCALE = "row-scale"  # the most rows (augmented copies counted) any client holds
FEATURE_CLIP = "feature-clip"  # each feature row's L2 norm is scaled down to this
DP_CLIP_NORM = "dp-clip-norm"  # privacy.dp with secure aggregation: the client clips its update to this L2 norm
SECAGG_MOMENTS = "secagg-moments"  # ConfigRecord of a secure normalisation-moments query (holds ROW_SCALE)
MOMENTS_CONTRIBUTION = "moments-contribution"  # reply ArrayRecord: the scaled moments, masked by the client mod
SECAGG_MASKED = "secagg-masked"  # reply ArrayRecord: the masked, quantised vector (int64 arrays "00000", ...)
