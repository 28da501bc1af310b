"""Client side of secure aggregation: Flower's SecAgg+ client stages around fedhar's handlers.

Flower's ``secaggplus_mod`` acts only on messages of type ``train`` and masks a legacy
``FitRes`` (parameters x examples). This mod runs Flower's own stages (key generation,
Shamir shares, share encryption, quantisation) with three changes:

- it acts on any message that carries the protocol's ConfigRecord (fedhar's
  ``train.<stage>``, ``query.class_stats`` and ``query.norm_stats``); a message without it
  passes through;
- in ``collect_masked_vectors`` it masks the handler's reply turned into this client's
  contribution: the trained arrays minus the global ones, weighted by its own quality and
  the example scale the server sent (:func:`fedhar.secure_sum.secure_contribution`; under
  ``privacy.dp`` first clipped to the DP clip norm, :func:`fedhar.privacy.clip_update`), or its
  class statistics scaled into the fixed-point range
  (:func:`fedhar.secure_sum.class_stats_contribution`), or the normalisation moments the
  handler already scaled into [-1, 1] (:func:`fedhar.secure_sum.moments_contribution`);
- the masks come from :func:`fedhar.secure_sum.mask_stream` (SHAKE-256 of the full secret),
  not Flower's 32-bit-seeded generator.

The reply then holds only the masked vector (an ArrayRecord of int64 arrays, sent in
Flower's 5 MB chunks) and the subject id: no weights, no quality scores, no loss.
"""

from __future__ import annotations

import logging
import math
from typing import cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.client.mod.secure_aggregation.secaggplus_mod import (  # Flower's own client stages, unchanged
    SecAggPlusState,
    _setup,
    _share_keys,
    _unmask,
    check_configs,
    check_stage,
)
from flwr.clientapp.typing import ClientAppCallable
from flwr.common.secure_aggregation.crypto.symmetric_encryption import decrypt, generate_shared_key
from flwr.common.secure_aggregation.ndarrays_arithmetic import (
    factor_combine,
    parameters_addition,
    parameters_mod,
    parameters_subtraction,
)
from flwr.common.secure_aggregation.quantization import quantize
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, RECORD_KEY_STATE, Key, Stage
from flwr.common.secure_aggregation.secaggplus_utils import share_keys_plaintext_separate
from flwr.supercore.primitives.asymmetric import bytes_to_private_key, bytes_to_public_key

from fedhar import keys
from fedhar.errors import ConfigError
from fedhar.privacy import clip_update
from fedhar.secure_sum import class_stats_contribution, mask_stream, secure_contribution
from fedhar.train.class_stats import ClassFeatureStats

__all__ = ["secure_aggregation_mod"]

logger = logging.getLogger(__name__)


def secure_aggregation_mod(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Run this node's SecAgg+ stage for ``msg`` (its training in ``collect_masked_vectors``)."""
    if RECORD_KEY_CONFIGS not in msg.content.config_records:
        return call_next(msg, ctxt)
    state_record = ctxt.state.config_records.get(RECORD_KEY_STATE, ConfigRecord({}))
    state = SecAggPlusState(**state_record)
    configs = msg.content.config_records[RECORD_KEY_CONFIGS]
    check_stage(state.current_stage, configs)
    state.current_stage = cast(str, configs.pop(Key.STAGE))
    check_configs(state.current_stage, configs)
    content = RecordDict()
    if state.current_stage == Stage.SETUP:
        state.nid = msg.metadata.dst_node_id
        result = _setup(state, configs)
    elif state.current_stage == Stage.SHARE_KEYS:
        result = _share_keys(state, configs)
    elif state.current_stage == Stage.COLLECT_MASKED_VECTORS:
        reply = call_next(msg, ctxt)
        if reply.has_error():
            return reply
        masked = _masked_vector(state, configs, _contribution(msg, reply, state.clipping_range))
        # An ArrayRecord, not Flower's list of bytes in a ConfigRecord: Flower sends arrays in 5 MB chunks,
        # a ConfigRecord as one object, which a gateway's body limit refuses for a large model.
        content[keys.SECAGG_MASKED] = ArrayRecord({f"{i:05d}": Array(a) for i, a in enumerate(masked)})
        result = {}
        subject = reply.content.metric_records[keys.METRICS].get(keys.SUBJECT)
        if isinstance(subject, int):
            content[keys.METRICS] = MetricRecord({keys.SUBJECT: subject})
    elif state.current_stage == Stage.UNMASK:
        result = _unmask(state, configs)
    else:  # check_stage rejects unknown stages; kept for the type checker
        raise ValueError(f"unknown secure-aggregation stage {state.current_stage!r}")
    ctxt.state.config_records[RECORD_KEY_STATE] = ConfigRecord(state.to_dict())
    content[RECORD_KEY_CONFIGS] = ConfigRecord(result, False)
    return Message(content, reply_to=msg)


def _contribution(msg: Message, reply: Message, clipping: float) -> list[np.ndarray]:
    """The handler's reply as this client's contribution: its weighted update, scaled class statistics or moments."""
    if keys.MOMENTS_CONTRIBUTION in reply.content.array_records:
        record = reply.content.array_records[keys.MOMENTS_CONTRIBUTION]
        return [record[k].numpy() * clipping for k in sorted(record)]
    if keys.CLASS_STATS in reply.content.array_records:
        return _class_stats_contribution(msg, reply, clipping)
    weighting = msg.content.config_records.get(keys.SECAGG_WEIGHTING)
    if weighting is None:
        raise ConfigError(f"the collect message lacks the ConfigRecord {keys.SECAGG_WEIGHTING!r}",
                          keys.SECAGG_WEIGHTING)
    scale, rule = weighting.get(keys.EXAMPLE_SCALE), weighting.get(keys.WEIGHTING)
    low, high = weighting.get(keys.QOM_LOW), weighting.get(keys.QOM_HIGH)
    if not all(isinstance(v, float) for v in (scale, low, high)) or rule not in ("qom", "examples"):
        raise ConfigError(f"bad {keys.SECAGG_WEIGHTING!r} record: {dict(weighting)}", keys.SECAGG_WEIGHTING)
    reference = {k: v.numpy() for k, v in msg.content.array_records[keys.ARRAYS].items()}
    trained = {k: v.numpy() for k, v in reply.content.array_records[keys.ARRAYS].items()}
    metrics = reply.content.metric_records[keys.METRICS]
    qom = {k[len(keys.QOM_PREFIX):]: float(cast(float, v)) for k, v in metrics.items()
           if k.startswith(keys.QOM_PREFIX)}
    clip_norm = weighting.get(keys.DP_CLIP_NORM)
    if clip_norm is not None:  # privacy.dp: clip this client's own update; the server never sees it to clip it
        if not (isinstance(clip_norm, float) and math.isfinite(clip_norm) and clip_norm > 0):
            raise ConfigError(f"bad {keys.DP_CLIP_NORM!r} in {keys.SECAGG_WEIGHTING!r}: {clip_norm!r}",
                              keys.DP_CLIP_NORM)
        trained, norm, clipped = clip_update(trained, reference, clip_norm)
        logger.info("DP: update norm %.3g%s", norm, f", clipped to {clip_norm:g}" if clipped else "")
    vector = secure_contribution(trained, reference, qom, cast(float, scale), rule,  # type: ignore[arg-type]
                                 (cast(float, low), cast(float, high)))
    outside = sum(int((np.abs(v) > clipping).sum()) for v in vector)
    if outside:
        logger.warning("%d entries of this client's contribution exceed the clipping range %g and are clipped",
                       outside, clipping)
    return vector


def _class_stats_contribution(msg: Message, reply: Message, clipping: float) -> list[np.ndarray]:
    record = msg.content.config_records.get(keys.SECAGG_CLASS_STATS)
    scale = record.get(keys.ROW_SCALE) if record is not None else None
    bound = record.get(keys.FEATURE_CLIP) if record is not None else None
    if not isinstance(scale, float) or not isinstance(bound, float):
        raise ConfigError(f"the collect message lacks floats {keys.ROW_SCALE!r}, {keys.FEATURE_CLIP!r} in "
                          f"{keys.SECAGG_CLASS_STATS!r}", keys.SECAGG_CLASS_STATS)
    arrays = {k: v.numpy() for k, v in reply.content.array_records[keys.CLASS_STATS].items()}
    return class_stats_contribution(ClassFeatureStats.from_arrays(arrays), scale, bound, clipping)


def _masked_vector(state: SecAggPlusState, configs: ConfigRecord, vector: list[np.ndarray]) -> list[np.ndarray]:
    """Flower's ``collect_masked_vectors`` stage for an already weighted ``vector``, with SHAKE-256 masks.

    Stores the key shares forwarded from the neighbours, quantises the vector (weight factor
    1: the contribution is weighted already), adds the private mask and the pairwise masks.
    """
    ciphertexts = cast(list[bytes], configs[Key.CIPHERTEXT_LIST])
    sources = cast(list[int], configs[Key.SOURCE_LIST])
    if len(ciphertexts) + 1 < state.threshold:
        raise ValueError("Not enough available neighbour clients.")
    neighbours = []
    for src, ciphertext in zip(sources, ciphertexts, strict=True):
        actual_src, dst, rd_seed_share, sk1_share = share_keys_plaintext_separate(
            decrypt(state.ss2_dict[src], ciphertext))
        if src != actual_src or dst != state.nid:
            raise ValueError(f"node {state.nid}: a key share from {actual_src} for {dst} arrived as from {src}")
        state.rd_seed_share_dict[src] = rd_seed_share
        state.sk1_share_dict[src] = sk1_share
        neighbours.append(src)
    quantized = factor_combine(state.target_range, quantize(vector, state.clipping_range, state.target_range))
    shapes = [a.shape for a in quantized]
    quantized = parameters_addition(quantized, mask_stream(state.rd_seed, state.mod_range, shapes))
    for node in neighbours:
        shared = generate_shared_key(bytes_to_private_key(state.sk1), bytes_to_public_key(state.public_keys_dict[node][0]))
        mask = mask_stream(shared, state.mod_range, shapes)
        quantized = (parameters_addition(quantized, mask) if state.nid > node
                     else parameters_subtraction(quantized, mask))
    return [np.asarray(a, dtype=np.int64) for a in parameters_mod(quantized, state.mod_range)]
