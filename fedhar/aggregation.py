"""Per-modality quality-weighted averaging of client state dicts, and validation of client updates.

Client ``k`` sends the parameters of the modalities it holds (state-dict keys
``encoders.<m>.…`` / ``heads.<m>.…``) plus the shared ones (any other key), its number
of examples ``n_k`` and a quality score ``q_k,m`` in [0, 1] per held modality (QoM,
Cosmo, Ouyang et al., MobiCom 2022). For each modality ``m`` the new global parameters
are the weighted mean over the holders ``H_m`` of ``m``::

    theta_m = sum_{k in H_m} w_k,m theta_k,m,   w_k,m = n_k q_k,m / sum_{j in H_m} n_j q_j,m

(``q`` is taken as 1 for plain FedAvg weighting); shared parameters are averaged over
all clients with ``w_k = n_k / sum_j n_j``. A modality no client holds keeps its
previous parameters. This module is framework-free: numpy arrays in, numpy arrays out.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from fedhar import keys
from fedhar.config_mapping import build

__all__ = [
    "ROBUST_RULES",
    "SHARED",
    "AggregationResult",
    "ClientUpdate",
    "InfluenceBounds",
    "Weighting",
    "aggregate_by_modality",
    "bound_influence",
    "group_keys",
    "modality_of",
    "validate_update",
]

logger = logging.getLogger(__name__)

Weighting = Literal["qom", "examples"]
RobustRule = Literal["mean", "median", "trimmed_mean"]
ROBUST_RULES: tuple[str, ...] = ("mean", "median", "trimmed_mean")
# BatchNorm buffers: statistics, not weights; an update's norm is measured over the rest.
_BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked")
WEIGHTINGS: tuple[str, ...] = ("qom", "examples")
# Group name of the parameters that belong to no modality (shared by all clients).
SHARED = "shared"
_MODALITY_PREFIXES = (keys.ENCODER_PREFIX, keys.HEAD_PREFIX)
# Default cap on a client's reported number of examples: far above any HAR subject's
# data (UTD-MHAD has ~110 sequences per subject, USC-HAD ~3000 windows).
DEFAULT_MAX_EXAMPLES = 10_000_000


@dataclass(frozen=True)
class ClientUpdate:
    """One client's contribution to a round.

    Parameters
    ----------
    client_id
        Name used in logs and metrics (the subject id, or the node id).
    arrays
        State-dict key -> array: the client's modalities' parameters and the shared ones.
    num_examples
        Number of training examples behind the update (``n_k``).
    qom
        Modality -> quality score in [0, 1]; its keys are the modalities the client
        claims to hold.
    train_loss
        The client's final training loss, if it reported one.
    """

    client_id: str
    arrays: Mapping[str, np.ndarray]
    num_examples: float
    qom: Mapping[str, float]
    train_loss: float | None = None

    @property
    def modalities(self) -> tuple[str, ...]:
        """The modalities the client claims, sorted."""
        return tuple(sorted(self.qom))


@dataclass(frozen=True)
class AggregationResult:
    """The new global arrays and the normalised weight each client got per group.

    ``weights[client_id][group]`` is ``w_k,m`` for a modality group, or ``w_k`` for
    :data:`SHARED`; the weights of one group sum to 1 over the clients that sent it.
    ``fallback`` lists the modalities whose holders all had quality 0, which were
    averaged by examples instead.
    """

    arrays: dict[str, np.ndarray]
    weights: dict[str, dict[str, float]]
    fallback: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class InfluenceBounds:
    """Server-side limits on what one client's reply can do to the global model.

    Parameters
    ----------
    qom_range
        Reported quality scores are clipped into ``[low, high]``: a client claiming 1.0
        among honest scores of ~0.1 gets at most ``high / low`` times their weight.
    update_clip
        Per group (modality or shared), a client's update ``theta_k - theta_global`` is
        scaled down so that neither its weights' nor its BatchNorm statistics' change
        exceeds ``update_clip`` times the median of that group's holders this round
        (measured apart, scaled together); ``None``: no clipping. Scale-free, so no
        per-model bound to tune.
    rule
        ``"mean"``: the weighted mean (QoM / FedAvg); ``"median"``: coordinate-wise
        median over the group's holders; ``"trimmed_mean"``: coordinate-wise mean after
        dropping the ``trim_fraction`` largest and smallest values (both ignore weights).
    trim_fraction
        Fraction trimmed at each end by ``"trimmed_mean"``.
    """

    qom_range: tuple[float, float] = (0.1, 1.0)
    update_clip: float | None = 3.0
    rule: RobustRule = "mean"
    trim_fraction: float = 0.2

    def __post_init__(self) -> None:
        low, high = self.qom_range
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"qom_range must satisfy 0 <= low <= high <= 1, got {self.qom_range}")
        if self.update_clip is not None and not self.update_clip >= 1.0:
            raise ValueError(f"update_clip must be >= 1 (a multiple of the median norm) or None, got {self.update_clip}")
        if self.rule not in ROBUST_RULES:
            raise ValueError(f"rule must be one of {ROBUST_RULES}, got {self.rule!r}")
        if not 0.0 <= self.trim_fraction < 0.5:
            raise ValueError(f"trim_fraction must be in [0, 0.5), got {self.trim_fraction}")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, object]) -> InfluenceBounds:
        """Build from a plain mapping (``strategy.bounds``); unknown keys raise."""
        return build(cls, cfg, "strategy.bounds")


def bound_influence(
    updates: Sequence[ClientUpdate], reference: Mapping[str, np.ndarray], bounds: InfluenceBounds
) -> tuple[list[ClientUpdate], dict[str, dict[str, float]]]:
    """Clip quality scores into range and oversized updates to the round's median norm.

    Returns the bounded updates (same order) and, per client and group, the factor its
    update was scaled by (only entries below 1, i.e. clipped ones).
    """
    low, high = bounds.qom_range
    out = [ClientUpdate(u.client_id, dict(u.arrays), u.num_examples,
                        {m: min(max(float(q), low), high) for m, q in u.qom.items()}, u.train_loss) for u in updates]
    scaled: dict[str, dict[str, float]] = {}
    if bounds.update_clip is None:
        return out, scaled
    for group, names in group_keys(reference).items():
        floats = [k for k in names if np.issubdtype(reference[k].dtype, np.floating)]
        holders = [u for u in out if floats and floats[0] in u.arrays]
        if len(holders) < 2:
            continue
        # Weights and BatchNorm statistics are measured apart (their scales differ); the
        # smaller factor scales the whole update, statistics included (a scaled running_var
        # poisons the model as surely as a scaled weight).
        factors = [1.0] * len(holders)
        for part in ([k for k in floats if not k.endswith(_BUFFER_SUFFIXES)],
                     [k for k in floats if k.endswith(_BUFFER_SUFFIXES)]):
            if not part:
                continue
            norms = [math.sqrt(sum(float(np.sum((np.asarray(u.arrays[k], np.float64) - reference[k]) ** 2))
                                   for k in part)) for u in holders]
            limit = bounds.update_clip * float(np.median(norms))
            factors = [min(f, limit / n) if n > limit > 0.0 else f for f, n in zip(factors, norms, strict=True)]
        for u, factor in zip(holders, factors, strict=True):
            if factor < 1.0:
                for k in floats:
                    delta = np.asarray(u.arrays[k], np.float64) - reference[k]
                    u.arrays[k] = (reference[k] + factor * delta).astype(reference[k].dtype)  # type: ignore[index]
                scaled.setdefault(u.client_id, {})[group] = factor
                logger.warning("client %s: %s update scaled by %.3g (its norm exceeded %g x the round's median)",
                               u.client_id, group, factor, bounds.update_clip)
    return out, scaled


def robust_combine(values: Sequence[np.ndarray], rule: RobustRule, trim_fraction: float) -> np.ndarray:
    """Coordinate-wise median or trimmed mean of equally shaped arrays (float64)."""
    stack = np.stack([np.asarray(v, np.float64) for v in values])
    if rule == "median":
        return np.asarray(np.median(stack, axis=0))
    cut = math.floor(trim_fraction * len(values))
    ordered = np.sort(stack, axis=0)
    return np.asarray(ordered[cut:len(values) - cut].mean(axis=0))


def modality_of(key: str) -> str | None:
    """The modality a state-dict key belongs to, or ``None`` for a shared parameter.

    >>> modality_of("encoders.skeleton.conv.0.weight")
    'skeleton'
    >>> modality_of("classifier.fc.bias") is None
    True
    """
    for prefix in _MODALITY_PREFIXES:
        if key.startswith(prefix):
            modality = key[len(prefix):].split(".", 1)[0]
            return modality or None
    return None


def group_keys(names: Iterable[str]) -> dict[str, list[str]]:
    """Group state-dict keys by modality; shared keys go under :data:`SHARED`.

    Raises
    ------
    ValueError
        If a modality is literally named ``"shared"`` (it would clash with the group).
    """
    groups: dict[str, list[str]] = {}
    for name in names:
        modality = modality_of(name)
        if modality == SHARED:
            raise ValueError(f"modality name {SHARED!r} is reserved (key {name!r}); rename the modality")
        groups.setdefault(modality or SHARED, []).append(name)
    return groups


def expected_keys(reference: Mapping[str, np.ndarray], modalities: Iterable[str]) -> set[str]:
    """Keys a client holding ``modalities`` must send: theirs plus every shared key."""
    wanted = set(modalities)
    return {k for k in reference if (m := modality_of(k)) is None or m in wanted}


def validate_update(
    update: ClientUpdate,
    reference: Mapping[str, np.ndarray],
    max_examples: float = DEFAULT_MAX_EXAMPLES,
) -> str | None:
    """Check one client's update against the global reference arrays.

    Parameters
    ----------
    update
        The client's update.
    reference
        The current global arrays (every modality and every shared key).
    max_examples
        Largest credible ``num_examples``.

    Returns
    -------
    str or None
        ``None`` if the update is usable, else the reason it must be rejected.
    """
    n = update.num_examples
    if isinstance(n, bool) or not isinstance(n, (int, float)) or not math.isfinite(n) or n <= 0:
        return f"num-examples must be a finite number > 0, got {n!r}"
    if n > max_examples:
        return f"num-examples {n} exceeds the cap {max_examples}"
    loss = update.train_loss
    if loss is not None and (not isinstance(loss, (int, float)) or not math.isfinite(loss)):
        return f"{keys.TRAIN_LOSS} must be a finite number, got {loss!r} (did training diverge?)"
    if not update.qom:
        return f"no {keys.QOM_PREFIX}<modality> metric: the client claims no modality"
    known = {m for k in reference if (m := modality_of(k)) is not None}
    unknown = sorted(set(update.qom) - known)
    if unknown:
        return f"claims modalities {unknown} the global model lacks (it has {sorted(known)})"
    for modality, score in sorted(update.qom.items()):
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            return f"{keys.QOM_PREFIX}{modality} must be a finite number, got {score!r}"
        if not 0.0 <= score <= 1.0:
            return f"{keys.QOM_PREFIX}{modality} must lie in [0, 1], got {score}"
    want = expected_keys(reference, update.qom)
    got = set(update.arrays)
    if got != want:
        missing, extra = sorted(want - got), sorted(got - want)
        return f"keys differ from those of modalities {list(update.modalities)}: missing {_some(missing)}, extra {_some(extra)}"
    for name in sorted(want):
        arr, ref = np.asarray(update.arrays[name]), reference[name]
        if arr.shape != ref.shape:
            return f"{name}: shape {arr.shape}, expected {ref.shape}"
        if arr.dtype != ref.dtype:
            return f"{name}: dtype {arr.dtype}, expected {ref.dtype}"
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            return f"{name}: holds NaN or Inf"
        if name.endswith("running_var") and np.any(arr < 0):
            return f"{name}: a negative variance"
    return None


def aggregate_by_modality(
    updates: Sequence[ClientUpdate],
    reference: Mapping[str, np.ndarray],
    weighting: Weighting = "qom",
    rule: RobustRule = "mean",
    trim_fraction: float = 0.2,
) -> AggregationResult:
    """Average validated updates per modality over the holders of each modality.

    Parameters
    ----------
    updates
        Validated client updates (see :func:`validate_update`), in a fixed order
        (sort them by client for bit-identical reruns: the sum is taken in this order).
    reference
        The current global arrays; keys no client sent keep these values, and results
        are cast back to their dtypes.
    weighting
        ``"qom"``: modality weights ``n_k q_k,m``; ``"examples"``: ``n_k`` (FedAvg).
    rule, trim_fraction
        ``"mean"``: the weighted mean; ``"median"`` / ``"trimmed_mean"``: coordinate-wise,
        unweighted, over the group's holders (see :class:`InfluenceBounds`); the reported
        weights are then the mean's, for the record.

    Returns
    -------
    AggregationResult
        New global arrays (same keys as ``reference``) and per-client weights.

    Raises
    ------
    ValueError
        If ``updates`` is empty or ``weighting`` is unknown.

    Notes
    -----
    Qualities are divided by the largest among a modality's holders before use (the
    weights are normalised, so this changes nothing mathematically), so that equal
    qualities give weights ``n_k / sum n_j`` bit for bit: exactly Flower's FedAvg.
    """
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    if not updates:
        raise ValueError("no client update to aggregate; keep the previous global arrays instead")
    ids = [u.client_id for u in updates]
    if len(set(ids)) != len(ids):
        raise ValueError(f"client ids must be unique, got {ids}")
    groups = group_keys(reference)
    new_arrays = {k: np.array(v, copy=True) for k, v in reference.items()}
    weights: dict[str, dict[str, float]] = {u.client_id: {} for u in updates}
    fallback: list[str] = []
    for group, names in groups.items():
        holders = [u for u in updates if names[0] in u.arrays]
        if not holders:
            logger.info("no client sent group %r this round: it keeps its previous parameters", group)
            continue
        raw = [float(u.num_examples) for u in holders]
        if group != SHARED and weighting == "qom":
            scores = [float(u.qom[group]) for u in holders]
            top = max(scores)
            if top > 0.0:
                raw = [n * (q / top) for n, q in zip(raw, scores, strict=True)]
            else:
                logger.warning("every holder of %r has quality 0: averaging it by examples", group)
                fallback.append(group)
        total = sum(raw)
        factors = [w / total for w in raw]
        for u, factor in zip(holders, factors, strict=True):
            weights[u.client_id][group] = factor
        for name in names:
            if rule != "mean" and len(holders) > 2:
                new_arrays[name] = _cast_like(robust_combine([u.arrays[name] for u in holders], rule, trim_fraction),
                                              reference[name])
                continue
            # Same order of operations as Flower's aggregate_arrayrecords (bit-identical).
            acc = np.asarray(holders[0].arrays[name]) * factors[0]
            for u, factor in zip(holders[1:], factors[1:], strict=True):
                acc = acc + np.asarray(u.arrays[name]) * factor
            new_arrays[name] = _cast_like(acc, reference[name])
    return AggregationResult(arrays=new_arrays, weights=weights, fallback=tuple(fallback))


def _cast_like(value: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """``value`` in ``ref``'s dtype; integer buffers (BatchNorm counters) are rounded."""
    if np.issubdtype(ref.dtype, np.integer) and not np.issubdtype(value.dtype, np.integer):
        value = np.rint(value)
    return np.asarray(value, dtype=ref.dtype).reshape(ref.shape)


def _some(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return f"[{shown}{', …' if len(names) > limit else ''}]" if names else "[]"
