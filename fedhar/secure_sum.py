"""What a client puts into secure aggregation, and how the server turns the sum back into QoMFedAvg.

Under secure aggregation (SecAgg+, docs/privacy.md) the server learns only the sum of what
the clients send. QoMFedAvg weights modality ``m`` of client ``k`` by ``n_k q_km``, so each
client sends its update already weighted, and its weights beside it:

- for every float parameter of group ``g`` (a modality's encoder and head, or the shared
  parameters): ``w_kg * (theta_k - theta_global)``, zeros for a modality it does not hold;
- the scalars ``a_km = s_k q_km`` and ``b_km = s_k [k holds m]`` per modality and
  ``b_k = s_k`` for the shared group, where ``s_k = n_k / n_max`` is the example scale the
  server sends (from the counts it knows, not the client's claim) and ``q_km`` the client's
  quality clipped to ``qom_range``.

``w_kg`` is ``a_kg`` under ``qom`` weighting and ``b_kg`` under ``examples`` weighting (1 x
``s_k`` for the shared group). From the sums the server recovers exactly the weighted mean
of :func:`fedhar.aggregation.aggregate_by_modality` (the common factor ``1 / n_max``
cancels) and the example-weighted mean quality per modality (``sum a / sum b``), which the
stage-2 prior needs. Every entry is bounded by 1 times the update, so the fixed-point
range of the protocol (``clipping_range``) bounds what one client adds to any coordinate.

Integer buffers (BatchNorm's ``num_batches_tracked``) are not summed: they keep the global
value (PyTorch uses them only when a BatchNorm has ``momentum=None``; fedhar's do not).
This module is framework-free: the protocol itself is Flower's (strategies/, clients/).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from fedhar.aggregation import SHARED, Weighting, group_keys, modality_of
from fedhar.config_mapping import build
from fedhar.data.normalization import ChannelMoments, NormStats
from fedhar.errors import ConfigError
from fedhar.train.class_stats import ClassFeatureStats

__all__ = [
    "SecureAggregationConfig",
    "SecureSumResult",
    "SumLayout",
    "class_stats_contribution",
    "mask_stream",
    "moments_contribution",
    "secure_contribution",
    "unpack_class_stats",
    "unpack_moments",
    "unpack_sum",
]


# Flower's quantiser rounds into int32: levels up to 2^30 leave headroom.
_MAX_QUANTIZATION = 2**30


@dataclass(frozen=True)
class SecureAggregationConfig:
    """Secure aggregation settings (config group ``privacy.secure_aggregation``).

    Parameters
    ----------
    enabled
        Off by default (docs/privacy.md: cost measured in BENCHMARKS.md).
    num_shares
        Shares each client splits its secrets into: a fraction (<= 1) of the clients
        sampled in the round, or a count (>= 3). More shares tolerate more dropouts.
    reconstruction_threshold
        Shares needed to rebuild a secret: a fraction (<= 1) of ``num_shares`` or a count.
        The server learns an individual update only by colluding with this many clients.
    clipping_range
        Each entry a client sends is clipped to ``[-clipping_range, clipping_range]``
        before quantisation: the most one client adds to one coordinate of the sum.
    quantization_range
        Levels of the fixed-point encoding (error per client and coordinate at most
        ``2 * clipping_range / quantization_range``). ``None`` (default): per round, the
        largest power of two (at most 2^30) whose sum over the round's clients stays below
        ``modulus_range`` (2^29 for 6 clients, 2^28 for 12): the lda round's covariance
        needs the precision (2^22 left it indefinite on UTD-MHAD).
    modulus_range
        Modulus of the masked integers: a power of two above ``quantization_range``
        times the number of clients.
    timeout_s
        Seconds to wait for each key-exchange stage's replies (``None``: the round
        timeout, ``federation.round_timeout_s``).
    feature_clip
        Stage 2 ``lda`` / ``ccvr``: each feature row is scaled to at most this L2 norm
        before the class statistics are summed (their fixed-point range needs a bound).
    """

    enabled: bool = False
    num_shares: float = 1.0
    reconstruction_threshold: float = 0.5
    clipping_range: float = 8.0
    quantization_range: int | None = None
    modulus_range: int = 2**32
    timeout_s: float | None = None
    feature_clip: float = 32.0

    def __post_init__(self) -> None:
        key = "privacy.secure_aggregation"
        if not (self.num_shares > 2 and float(self.num_shares).is_integer()) and not 0.0 < self.num_shares <= 1.0:
            raise ConfigError(f"num_shares must be a fraction in (0, 1] or a count >= 3, got {self.num_shares!r}",
                              f"{key}.num_shares")
        if not (self.reconstruction_threshold >= 2 and float(self.reconstruction_threshold).is_integer()) \
                and not 0.0 < self.reconstruction_threshold <= 1.0:
            raise ConfigError(f"reconstruction_threshold must be a fraction in (0, 1] or a count >= 2, got "
                              f"{self.reconstruction_threshold!r}", f"{key}.reconstruction_threshold")
        if not (math.isfinite(self.clipping_range) and self.clipping_range > 0):
            raise ConfigError(f"clipping_range must be a finite number > 0, got {self.clipping_range!r}",
                              f"{key}.clipping_range")
        if self.quantization_range is not None and not 2 <= self.quantization_range <= _MAX_QUANTIZATION:
            raise ConfigError(f"quantization_range must be null or an integer in [2, 2**30], got "
                              f"{self.quantization_range!r}", f"{key}.quantization_range")
        if self.modulus_range < 4 or self.modulus_range & (self.modulus_range - 1) or self.modulus_range > 2**32 \
                or self.modulus_range <= (self.quantization_range or 0):
            raise ConfigError(f"modulus_range must be a power of two above quantization_range and at most 2**32, "
                              f"got {self.modulus_range!r}", f"{key}.modulus_range")
        if not (math.isfinite(self.feature_clip) and self.feature_clip > 0):
            raise ConfigError(f"feature_clip must be a finite number > 0, got {self.feature_clip!r}",
                              f"{key}.feature_clip")
        if self.timeout_s is not None and not self.timeout_s > 0:
            raise ConfigError(f"timeout_s must be null or > 0, got {self.timeout_s!r}", f"{key}.timeout_s")

    @classmethod
    def from_mapping(cls, cfg: Mapping[str, object]) -> SecureAggregationConfig:
        """Build from a plain mapping; unknown keys raise :class:`ConfigError`."""
        return build(cls, cfg, "privacy.secure_aggregation")

    def quantization_for(self, num_clients: int) -> int:
        """The quantisation levels of a round with ``num_clients``: the configured ones or the most that fit.

        Raises
        ------
        ValueError
            If ``num_clients`` quantised vectors would overflow ``modulus_range``.
        """
        fits = (self.modulus_range - 1) // max(num_clients, 1)
        if self.quantization_range is None:
            if fits < 2:
                raise ValueError(f"{num_clients} clients overflow modulus_range {self.modulus_range}")
            return min(1 << (fits.bit_length() - 1), _MAX_QUANTIZATION)
        if self.quantization_range > fits:
            raise ValueError(f"{num_clients} clients x quantization_range {self.quantization_range} overflow "
                             f"modulus_range {self.modulus_range}")
        return self.quantization_range

    def quantization_step(self, num_clients: int) -> float:
        """The fixed-point step of a round with ``num_clients``: the most quantisation moves one client's entry."""
        return 2.0 * self.clipping_range / (self.quantization_for(num_clients) - 1)


@dataclass(frozen=True)
class SumLayout:
    """The order of the arrays every client sends: float parameters by key, then the weight scalars.

    Built from the global arrays alone, so server and clients agree on it.
    """

    keys: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    modalities: tuple[str, ...]

    @classmethod
    def of(cls, reference: Mapping[str, np.ndarray]) -> SumLayout:
        """The layout for the global arrays ``reference`` (its float keys, sorted; its modalities)."""
        names = tuple(sorted(k for k, v in reference.items() if np.issubdtype(np.asarray(v).dtype, np.floating)))
        modalities = tuple(sorted(g for g in group_keys(reference) if g != SHARED))
        return cls(names, tuple(tuple(np.asarray(reference[k]).shape) for k in names), modalities)

    @property
    def num_scalars(self) -> int:
        """``a_m`` and ``b_m`` per modality, then ``b`` of the shared group."""
        return 2 * len(self.modalities) + 1


def _weights_vector(layout: SumLayout, qom: Mapping[str, float], example_scale: float,
                    qom_range: tuple[float, float]) -> np.ndarray:
    low, high = qom_range
    a = [example_scale * min(max(float(qom[m]), low), high) if m in qom else 0.0 for m in layout.modalities]
    b = [example_scale if m in qom else 0.0 for m in layout.modalities]
    return np.asarray([*a, *b, example_scale], dtype=np.float64)


def secure_contribution(
    arrays: Mapping[str, np.ndarray],
    reference: Mapping[str, np.ndarray],
    qom: Mapping[str, float],
    example_scale: float,
    weighting: Weighting,
    qom_range: tuple[float, float],
) -> list[np.ndarray]:
    """What one client adds to the secure sum, in :class:`SumLayout` order (float64 arrays).

    Parameters
    ----------
    arrays
        The client's trained state dict (its modalities' keys and the shared ones).
    reference
        The global arrays it started from.
    qom
        Its quality per modality it holds (its keys are the modalities it holds).
    example_scale
        ``s_k = n_k / n_max`` in (0, 1], sent by the server.
    weighting, qom_range
        The strategy's weighting and quality range.

    Raises
    ------
    ValueError
        If ``example_scale`` is outside (0, 1], a held modality is unknown, or a held key
        is missing from ``arrays``.
    """
    if not 0.0 < example_scale <= 1.0:
        raise ValueError(f"example scale must be in (0, 1], got {example_scale!r}")
    layout = SumLayout.of(reference)
    unknown = sorted(set(qom) - set(layout.modalities))
    if unknown:
        raise ValueError(f"modalities {unknown} are not in the global model {list(layout.modalities)}")
    weights = _weights_vector(layout, qom, example_scale, qom_range)
    num = len(layout.modalities)
    group_weight = {m: float(weights[i] if weighting == "qom" else weights[num + i])
                    for i, m in enumerate(layout.modalities)}
    group_weight[SHARED] = example_scale
    out = []
    for name, shape in zip(layout.keys, layout.shapes, strict=True):
        group = modality_of(name) or SHARED
        if group != SHARED and group not in qom:
            out.append(np.zeros(shape, dtype=np.float64))
            continue
        if name not in arrays:
            raise ValueError(f"the update lacks {name!r} of a modality it holds ({group})")
        delta = np.asarray(arrays[name], np.float64) - np.asarray(reference[name], np.float64)
        out.append(group_weight[group] * delta)
    out.append(weights)
    return out


@dataclass(frozen=True)
class SecureSumResult:
    """The aggregate recovered from a secure sum.

    Parameters
    ----------
    arrays
        New global arrays (keys and dtypes of the reference); a group whose weight sum is
        0 (no holder this round) keeps the reference values.
    weight_sums
        Group -> the sum of the weights it was divided by.
    mean_qom
        Modality -> the example-weighted mean (clipped) quality of its holders.
    """

    arrays: dict[str, np.ndarray]
    weight_sums: dict[str, float]
    mean_qom: dict[str, float]


def unpack_sum(
    total: Sequence[np.ndarray],
    reference: Mapping[str, np.ndarray],
    weighting: Weighting,
    num_clients: int,
    entry_bound: float | None = None,
    tolerance: float = 1e-3,
) -> SecureSumResult:
    """QoMFedAvg's new global arrays from the sum of ``num_clients`` contributions.

    ``entry_bound`` is the clipping range each honest client clipped its entries to: a sum
    entry beyond ``num_clients x entry_bound`` proves that a client sent more (it controls
    its own quantisation), and the round must not be used.

    Raises
    ------
    ValueError
        If ``total`` does not match the layout, a weight sum is impossible for
        ``num_clients`` honest clients (negative, or above ``num_clients``), or an entry
        exceeds ``num_clients x entry_bound``: a client sent values outside its range.
    """
    layout = SumLayout.of(reference)
    if len(total) != len(layout.keys) + 1:
        raise ValueError(f"the sum has {len(total)} arrays, the layout {len(layout.keys) + 1}")
    scalars = np.asarray(total[-1], np.float64).reshape(-1)
    if scalars.shape != (layout.num_scalars,):
        raise ValueError(f"the weight scalars have shape {scalars.shape}, expected ({layout.num_scalars},)")
    num = len(layout.modalities)
    a, b = scalars[:num], scalars[num:2 * num]
    sums = {m: float(a[i] if weighting == "qom" else b[i]) for i, m in enumerate(layout.modalities)}
    sums[SHARED] = float(scalars[-1])
    for group, value in sums.items():
        if not -tolerance <= value <= num_clients + tolerance:
            raise ValueError(f"the weight sum of {group!r} is {value:.6g}, impossible for {num_clients} clients "
                             f"with weights in [0, 1]: a client sent weights out of range")
    if entry_bound is not None:
        _check_entry_bound((*layout.keys, "weights"), total, num_clients, entry_bound, tolerance)
    new = {k: np.array(v, copy=True) for k, v in reference.items()}
    for name, summed in zip(layout.keys, total[:-1], strict=True):
        weight = sums[modality_of(name) or SHARED]
        if weight <= tolerance:
            continue
        ref = np.asarray(reference[name])
        new[name] = (ref.astype(np.float64) + np.asarray(summed, np.float64).reshape(ref.shape) / weight
                     ).astype(ref.dtype)
    mean_qom = {m: float(a[i] / b[i]) for i, m in enumerate(layout.modalities) if b[i] > tolerance}
    return SecureSumResult(new, sums, mean_qom)


def class_stats_contribution(stats: ClassFeatureStats, row_scale: float, feature_clip: float,
                             clipping_range: float) -> list[np.ndarray]:
    """One client's class statistics scaled into ``[-clipping_range, clipping_range]`` for the secure sum.

    With at most ``row_scale`` rows (augmented copies counted), each of L2 norm at most
    ``feature_clip``: counts / ``row_scale``, sums / (``row_scale`` x ``feature_clip``), scatter /
    (``row_scale`` x ``feature_clip``^2), each times ``clipping_range``.

    Raises
    ------
    ValueError
        If the client holds more rows than ``row_scale``.
    """
    if stats.counts.sum() > row_scale:
        raise ValueError(f"{int(stats.counts.sum())} rows exceed the row scale {row_scale:g} the server sent")
    factor = clipping_range / row_scale
    return [stats.counts * factor, stats.sums * (factor / feature_clip), stats.scatter * (factor / feature_clip**2)]


def unpack_class_stats(total: Sequence[np.ndarray], row_scale: float, feature_clip: float, clipping_range: float,
                       expected_counts: np.ndarray, num_clients: int) -> ClassFeatureStats:
    """The merged class statistics from the sum of ``num_clients`` :func:`class_stats_contribution` vectors.

    The server knows how many labeled rows of each class the summed clients hold (the label
    split), so the summed counts must equal ``expected_counts``: a client that sent other
    counts, or entries beyond its range, fails the round.

    Raises
    ------
    ValueError
        If the sum is malformed, exceeds what clipped clients can send, or its counts differ.
    """
    if len(total) != 3:
        raise ValueError(f"the sum has {len(total)} arrays, expected counts, sums, scatter")
    _check_entry_bound(("counts", "sums", "scatter"), total, num_clients, clipping_range)
    factor = row_scale / clipping_range
    counts = np.asarray(total[0], np.float64) * factor
    rounded = np.rint(counts)
    if not np.array_equal(rounded, np.asarray(expected_counts, np.float64)) or np.abs(counts - rounded).max() > 0.1:
        raise ValueError(f"summed class counts {np.round(counts, 2).tolist()} differ from the "
                         f"{np.asarray(expected_counts).astype(int).tolist()} the server expects")
    sums = np.asarray(total[1], np.float64) * (factor * feature_clip)
    scatter = np.asarray(total[2], np.float64) * (factor * feature_clip**2)
    scatter = (scatter + scatter.T) / 2.0  # quantisation breaks exact symmetry
    np.fill_diagonal(scatter, np.maximum(np.diag(scatter), 0.0))
    return ClassFeatureStats(rounded, sums, scatter)


def moments_contribution(stats: NormStats, modalities: Sequence[str], per_row: Mapping[str, int],
                         bounds: Mapping[str, np.ndarray], row_scale: float, clipping_range: float) -> list[np.ndarray]:
    """One client's normalisation moments scaled into ``[-clipping_range, clipping_range]`` for the secure sum.

    Per modality of ``modalities`` (in that order): the sums divided by ``row_scale x per_row x
    bound`` and the sums of squares by ``row_scale x per_row x bound^2`` (per channel), zeros for a
    modality the client does not hold. With values clipped to ``bounds`` (what
    :func:`fedhar.data.federation.summarize_subject` does with them) and at most ``row_scale``
    rows, every entry lies in the range. The counts stay out: the server knows them.

    Raises
    ------
    ValueError
        If the client holds more rows than ``row_scale``.
    """
    out: list[np.ndarray] = []
    for name in modalities:
        bound = np.asarray(bounds[name], np.float64)
        mom = stats.moments.get(name)
        if mom is None:
            out += [np.zeros_like(bound), np.zeros_like(bound)]
            continue
        values = row_scale * per_row[name]
        if mom.count > values:
            raise ValueError(f"{name}: {mom.count} values per channel exceed the row scale {row_scale:g} x "
                             f"{per_row[name]} the server sent")
        out += [mom.sum / (values * bound) * clipping_range, mom.sum_sq / (values * bound**2) * clipping_range]
    return out


def unpack_moments(total: Sequence[np.ndarray], modalities: Sequence[str], counts: Mapping[str, int],
                   per_row: Mapping[str, int], bounds: Mapping[str, np.ndarray], row_scale: float,
                   clipping_range: float, num_clients: int, tolerance: float = 1e-6) -> NormStats:
    """The merged moments from the sum of ``num_clients`` :func:`moments_contribution` vectors.

    ``counts`` are the summed clients' values per channel, from their census (which the
    server checked against their class counts). A modality no summed client holds is left
    out. A mean beyond the bound, or a mean square beyond the bound squared, can only come
    from a client that sent values outside its range: it fails the round.

    Raises
    ------
    ValueError
        If the sum is malformed or holds moments no clipped client can produce.
    """
    if len(total) != 2 * len(modalities):
        raise ValueError(f"the sum has {len(total)} arrays, expected a sum and a sum of squares for each of "
                         f"{list(modalities)}")
    names = [f"{m}{part}" for m in modalities for part in (".sum", ".sum-sq")]
    _check_entry_bound(names, total, num_clients, clipping_range)
    moments: dict[str, ChannelMoments] = {}
    for i, name in enumerate(modalities):
        if not counts.get(name):
            continue
        bound = np.asarray(bounds[name], np.float64)
        values = row_scale * per_row[name] / clipping_range
        sums = np.asarray(total[2 * i], np.float64) * values * bound
        squares = np.asarray(total[2 * i + 1], np.float64) * values * bound**2
        if sums.shape != bound.shape or squares.shape != bound.shape:
            raise ValueError(f"{name}: summed moments of shape {sums.shape}/{squares.shape}, expected {bound.shape}")
        n = counts[name]
        if np.any(np.abs(sums) / n > bound * (1 + tolerance)) or np.any(squares / n > bound**2 * (1 + tolerance)) \
                or np.any(squares / n < -bound**2 * tolerance):
            raise ValueError(f"{name}: merged moments beyond the value bounds {bound.tolist()}: a client sent values "
                             "outside its range")
        moments[name] = ChannelMoments(int(n), sums, np.maximum(squares, 0.0))
    return NormStats(moments)


def mask_stream(seed: bytes, modulus_range: int, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """SecAgg+ masks of ``shapes`` from a secret ``seed``: SHAKE-256 output as uint32 words mod ``modulus_range``.

    Replaces Flower's ``pseudo_rand_gen``, which folds the 256-bit secret into a 32-bit seed
    for NumPy's Mersenne Twister: a server could search 2^32 seeds (docs/privacy.md). An
    extendable-output hash keeps the secret's full strength; ``modulus_range`` (a power of
    two, at most 2^32) makes the words uniform.
    """
    sizes = [math.prod(shape) for shape in shapes]
    words = np.frombuffer(hashlib.shake_256(seed).digest(4 * sum(sizes)), dtype="<u4").astype(np.int64)
    words %= modulus_range
    out, start = [], 0
    for shape, size in zip(shapes, sizes, strict=True):
        out.append(words[start:start + size].reshape(shape))
        start += size
    return out


def _check_entry_bound(names: Sequence[str], total: Sequence[np.ndarray], num_clients: int, clipping_range: float,
                       tolerance: float = 1e-3) -> None:
    """Raise if a summed entry exceeds what ``num_clients`` clients clipped to ``clipping_range`` can send.

    A client quantises its own vector, so clipping alone bounds nothing: the sum shows a breach.
    """
    limit = num_clients * clipping_range * (1 + 1e-6) + tolerance
    for name, summed in zip(names, total, strict=True):
        largest = float(np.max(np.abs(summed))) if np.size(summed) else 0.0
        if largest > limit:
            raise ValueError(f"{name}: a summed entry of {largest:.6g} exceeds {num_clients} clients x the clipping "
                             f"range {clipping_range:g}: a client sent values outside its range")
