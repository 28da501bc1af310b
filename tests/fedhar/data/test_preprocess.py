"""Tests of time-axis preprocessing: linear resampling, sliding windows, durations."""

from __future__ import annotations

import numpy as np
import pytest

from fedhar.data.preprocess import count_windows, resample_linear, seconds_to_samples, sliding_windows
from fedhar.errors import ConfigError


def _interp_reference(x: np.ndarray, length: int) -> np.ndarray:
    """np.interp channel by channel, endpoints aligned."""
    flat = x.reshape(len(x), -1)
    src = np.arange(len(x))
    dst = np.linspace(0, len(x) - 1, length)
    out = np.stack([np.interp(dst, src, flat[:, c]) for c in range(flat.shape[1])], axis=1)
    return out.reshape(length, *x.shape[1:])


class TestResampleLinear:
    @pytest.mark.parametrize("n", [2, 7, 120, 326])
    @pytest.mark.parametrize("length", [2, 40, 120])
    def test_resample__matches_np_interp(self, n: int, length: int) -> None:
        x = np.random.default_rng(n).normal(size=(n, 4, 3))
        np.testing.assert_allclose(resample_linear(x, length), _interp_reference(x, length), rtol=0, atol=1e-12)

    def test_resample__keeps_endpoints_and_identity(self) -> None:
        x = np.random.default_rng(0).normal(size=(50, 6))
        out = resample_linear(x, 17)
        np.testing.assert_array_equal(out[[0, -1]], x[[0, -1]])
        np.testing.assert_allclose(resample_linear(x, 50), x, atol=1e-12)

    @pytest.mark.parametrize(("n", "length"), [(1, 10), (10, 1)])
    def test_resample__raises__too_short(self, n: int, length: int) -> None:
        with pytest.raises(ValueError, match="2"):
            resample_linear(np.zeros((n, 3)), length)


class TestSlidingWindows:
    @pytest.mark.parametrize(("n", "window", "stride"), [(10, 3, 1), (10, 3, 2), (1000, 200, 100), (399, 200, 100)])
    def test_windows__match_loop_reference(self, n: int, window: int, stride: int) -> None:
        x = np.arange(n * 6, dtype=np.float32).reshape(n, 6)
        windows, starts = sliding_windows(x, window, stride)
        expected_starts = list(range(0, n - window + 1, stride))
        assert starts.tolist() == expected_starts
        assert windows.shape == (len(expected_starts), window, 6) and windows.dtype == np.float32
        for w, s in zip(windows, expected_starts, strict=True):
            np.testing.assert_array_equal(w, x[s : s + window])

    def test_windows__empty__shorter_than_window(self) -> None:
        windows, starts = sliding_windows(np.zeros((5, 3)), 6, 1)
        assert windows.shape == (0, 6, 3) and starts.shape == (0,)
        assert count_windows(5, 6, 1) == 0

    def test_windows__raises__bad_stride(self) -> None:
        with pytest.raises(ValueError, match="stride"):
            sliding_windows(np.zeros((5, 3)), 2, 0)


class TestSecondsToSamples:
    def test_convert__whole_samples(self) -> None:
        assert seconds_to_samples(2.0, 100.0, "w") == 200
        assert seconds_to_samples(0.01, 100.0, "w") == 1

    @pytest.mark.parametrize("seconds", [0.0, -1.0, 0.005, 1.2345])
    def test_convert__raises__not_whole_or_not_positive(self, seconds: float) -> None:
        with pytest.raises(ConfigError) as err:
            seconds_to_samples(seconds, 100.0, "dataset.preprocess.window_s")
        assert err.value.culprit == "dataset.preprocess.window_s"
