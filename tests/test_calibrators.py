"""Calibrators against ranges computed by hand (or by brute force) on known distributions."""

from __future__ import annotations

import numpy as np
import pytest

from infer_compile.calibration.calibrators import (
    METHODS,
    SMOOTHING,
    AbsHistogram,
    entropy_amax,
    method,
    minmax_amax,
    mse_amax,
    percentile_amax,
)
from infer_compile.calibration.options import CALIB_METHOD
from infer_compile.core.errors import UserInputError

N = 400_000


def histogram(values: np.ndarray, chunks: int = 1, bins: int = 2048) -> AbsHistogram:
    hist = AbsHistogram(bins)
    for chunk in np.array_split(values, chunks):
        hist.update(chunk)
    return hist


@pytest.fixture(scope="module")
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_streamed_histogram_equals_one_shot_histogram(rng: np.random.Generator) -> None:
    # Chunks of growing scale force the range to double several times while streaming.
    values = np.concatenate([rng.uniform(-1, 1, 50_000) * s for s in (0.1, 0.5, 3.0, 7.5)]).astype(np.float32)
    hist = histogram(values, chunks=4)
    first_max = float(np.abs(values[:50_000]).max())  # ~0.1, doubled until it covers 7.5
    assert hist.top == pytest.approx(first_max * 2 ** 7, rel=1e-6)
    expected, _ = np.histogram(np.abs(values), bins=hist.bins, range=(0, hist.top))
    assert hist.counts.sum() == values.size
    assert np.abs(hist.counts - expected).sum() <= 1e-4 * values.size  # only float rounding at bin edges
    assert hist.counts.size == 2048  # memory stays bounded however much data went through


def test_minmax_is_the_exact_max_abs(rng: np.random.Generator) -> None:
    values = rng.normal(0, 1, N)
    values[123] = -9.5
    assert minmax_amax(histogram(values, chunks=8)) == pytest.approx(9.5)


@pytest.mark.parametrize(("dist", "pct", "expected"), [
    ("uniform", 99.0, 0.99),  # |U(-1,1)| is U(0,1): the 99th percentile is 0.99
    ("normal", 99.9, 3.2905),  # P(|Z| <= 3.2905) = 0.999
    ("normal", 95.0, 1.9600),
])
def test_percentile(rng: np.random.Generator, dist: str, pct: float, expected: float) -> None:
    values = rng.uniform(-1, 1, N) if dist == "uniform" else rng.normal(0, 1, N)
    hist = histogram(values, chunks=4)
    bin_width = hist.top / hist.bins
    assert percentile_amax(hist, pct) == pytest.approx(expected, abs=0.02 * expected + bin_width)
    assert method("percentile", pct)(hist) == percentile_amax(hist, pct)


def _trt_entropy_reference(counts: np.ndarray, edges: np.ndarray) -> float:
    """TensorRT's KL calibration written as the plain loop (pytorch-quantization's transcription),
    with MXNet/ONNX Runtime's smoothing where P has mass and Q none."""
    best, best_i = np.inf, None
    for i in range(128, len(counts) + 1):
        p = counts[:i].astype(np.float64).copy()
        p[i - 1] += counts[i:].sum()
        candidate = counts[:i].astype(np.float64)
        merged = i // 128
        q = np.zeros(i)
        for j in range(128):
            start = j * merged
            end = i if j == 127 else start + merged
            nonzero = np.count_nonzero(candidate[start:end])
            if nonzero:
                q[start:end] = candidate[start:end].sum() / nonzero
        q[candidate == 0] = 0
        p, q = p / p.sum(), q / q.sum()
        q[(p > 0) & (q == 0)] = SMOOTHING  # outliers beyond an empty bin: smoothed, not infinite
        with np.errstate(divide="ignore", invalid="ignore"):
            kl = np.sum(np.where(p > 0, p * np.log(p / q), 0.0))
        if kl < best:
            best, best_i = kl, i
    return float(edges[best_i])


@pytest.mark.parametrize("dist", ["normal", "laplace"])
def test_entropy_matches_tensorrts_loop(rng: np.random.Generator, dist: str) -> None:
    values = rng.normal(0, 1, N) if dist == "normal" else rng.laplace(0, 1, N)
    hist = histogram(values, bins=512)
    assert entropy_amax(hist) == pytest.approx(_trt_entropy_reference(hist.counts, hist.edges), rel=1e-9)


def test_entropy_clips_a_far_outlier(rng: np.random.Generator) -> None:
    values = np.append(rng.uniform(-1, 1, N), 100.0)
    hist = histogram(values)
    amax = entropy_amax(hist)
    assert 0.9 <= amax <= 128 * hist.top / hist.bins + 1e-6, amax  # ignores the outlier: the smallest candidate
    assert entropy_amax(hist) == pytest.approx(_trt_entropy_reference(hist.counts, hist.edges))


def _fake_quant_mse(values: np.ndarray, amax: float) -> float:
    scale = amax / 127
    return float(np.mean((values - np.clip(np.round(values / scale), -127, 127) * scale) ** 2))


@pytest.mark.parametrize(("dist", "known"), [
    ("uniform", 1.0),  # no tail: clipping anything only adds error
    ("laplace", 9.89),  # Banner et al. (ACIQ): 8-bit optimal clipping of Laplace(0, 1) ~ 9.89 b
])
def test_mse_finds_the_optimal_clipping(rng: np.random.Generator, dist: str, known: float) -> None:
    values = rng.uniform(-1, 1, N) if dist == "uniform" else rng.laplace(0, 1, N)
    amax = mse_amax(histogram(values, chunks=4))
    assert amax == pytest.approx(known, rel=0.1)
    # Brute force on the raw values: no clipping value is meaningfully better than the one chosen.
    grid = np.linspace(0.5, 1.0, 40) * np.abs(values).max()
    best = min(_fake_quant_mse(values, a) for a in grid)
    assert _fake_quant_mse(values, amax) <= 1.05 * best


def test_empty_and_all_zero_tensors_give_zero() -> None:
    hist = AbsHistogram()
    hist.update(np.zeros(10, np.float32))
    hist.update(np.array([], np.float32))
    for name in ("minmax", "percentile", "entropy", "mse"):
        assert method(name)(hist) == 0.0


def test_unknown_method_and_bad_percentile() -> None:
    with pytest.raises(UserInputError, match="unknown calibration method 'kl'"):
        method("kl")
    with pytest.raises(UserInputError, match="not in"):
        percentile_amax(histogram(np.ones(4)), 120)


def test_zeros_of_a_relu_do_not_pull_the_entropy_range_down(rng: np.random.Generator) -> None:
    values = rng.normal(0, 1, N)
    relu = histogram(np.maximum(values, 0))
    assert relu.zeros == np.count_nonzero(values <= 0)
    assert entropy_amax(relu) == pytest.approx(entropy_amax(histogram(np.abs(values))), rel=0.05)
    assert percentile_amax(relu, 50.0) == pytest.approx(0.0, abs=relu.top / relu.bins)  # zeros still count


def test_every_calibrator_is_a_calib_method_choice() -> None:
    """--calib-method's choices are declared without importing the calibrators (numpy): they must name the same
    methods, in the same order."""
    assert tuple(METHODS) == CALIB_METHOD.choices
