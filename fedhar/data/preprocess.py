"""Time-axis preprocessing of raw recordings: fixed-length resampling and sliding windows."""

from __future__ import annotations

import numpy as np

from fedhar.errors import ConfigError


def resample_linear(x: np.ndarray, length: int) -> np.ndarray:
    """Resample ``x`` along its first (time) axis to ``length`` steps by linear interpolation.

    Output step ``i`` lies at input position ``i * (n - 1) / (length - 1)``, so the first
    and last samples are kept exactly and every output value lies between two neighbouring
    inputs. Linear interpolation is used instead of FFT resampling
    (``scipy.signal.resample``) because the trials are not periodic: the FFT method wraps
    the end of a trial onto its start and rings (Gibbs overshoot) at both ends, which
    distorts exactly the start and end of a gesture.

    Parameters
    ----------
    x
        ``(n, ...)`` array with ``n >= 2``; trailing axes (channels, joints) are kept.
    length
        Number of output steps, ``>= 2``.

    Returns
    -------
    np.ndarray
        ``(length, ...)`` float64 array.

    Raises
    ------
    ValueError
        If ``length < 2`` or ``x`` has fewer than 2 steps.

    Examples
    --------
    >>> resample_linear(np.array([0.0, 2.0]), 3)
    array([0., 1., 2.])
    """
    if length < 2:
        raise ValueError(f"length must be >= 2, got {length}")
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 time steps to interpolate, got shape {x.shape}")
    src = np.asarray(x, dtype=np.float64)
    pos = np.linspace(0.0, n - 1, length)  # (length,) fractional input positions
    left = np.minimum(np.floor(pos).astype(np.int64), n - 2)
    frac = (pos - left).reshape(-1, *([1] * (src.ndim - 1)))
    return src[left] * (1.0 - frac) + src[left + 1] * frac


def seconds_to_samples(seconds: float, sample_rate_hz: float, name: str) -> int:
    """Convert a duration to a whole number of samples.

    Parameters
    ----------
    seconds
        Duration in seconds, ``> 0``.
    sample_rate_hz
        Sampling rate of the recording.
    name
        Config key of the duration, named in the error.

    Returns
    -------
    int
        ``seconds * sample_rate_hz``, which must be a positive whole number.

    Raises
    ------
    ConfigError
        If the duration is not positive or is not a whole number of samples.
    """
    samples = float(seconds) * sample_rate_hz
    whole = round(samples)
    if whole < 1 or not np.isclose(samples, whole, rtol=0.0, atol=1e-6):
        raise ConfigError(
            f"{name}={seconds} s is {samples} samples at {sample_rate_hz} Hz; "
            "choose a positive duration that is a whole number of samples",
            name,
        )
    return whole


def count_windows(num_samples: int, window: int, stride: int) -> int:
    """Number of complete windows of ``window`` samples every ``stride`` samples."""
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got window={window}, stride={stride}")
    return 0 if num_samples < window else (num_samples - window) // stride + 1


def sliding_windows(x: np.ndarray, window: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut ``x`` into complete, possibly overlapping windows along its first (time) axis.

    Window ``k`` is ``x[k * stride : k * stride + window]``. A trailing remainder shorter
    than a window is dropped; a recording shorter than one window gives no window.

    Parameters
    ----------
    x
        ``(n, C)`` recording.
    window
        Window length in samples, ``>= 1``.
    stride
        Step between window starts in samples, ``>= 1``.

    Returns
    -------
    windows
        ``(num_windows, window, C)`` copy of the windows (same dtype as ``x``).
    starts
        ``(num_windows,)`` int64 start index of each window in ``x``.

    Examples
    --------
    >>> w, s = sliding_windows(np.arange(10.0).reshape(5, 2), window=2, stride=2)
    >>> w.shape, s.tolist()
    ((2, 2, 2), [0, 2])
    """
    num = count_windows(x.shape[0], window, stride)
    starts = np.arange(num, dtype=np.int64) * stride
    if num == 0:
        return np.empty((0, window, *x.shape[1:]), dtype=x.dtype), starts
    # sliding_window_view puts the window axis last: (n - window + 1, C, window)
    view = np.lib.stride_tricks.sliding_window_view(x, window, axis=0)[::stride]
    return np.ascontiguousarray(np.moveaxis(view, -1, 1)), starts
