"""Calibrators: pick the INT8 clipping range (amax) of a tensor from its streamed |x| histogram.

Every method is symmetric (TensorRT's rule: signed int8, zero-point 0), so a tensor's range is one
number, ``amax``; the quantization scale is ``amax / 127``. Values are streamed through a
fixed-size histogram of |x| whose range grows by powers of two (old bins merge exactly), so memory
stays ``bins`` counters per tensor however many samples are fed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from infer_compile.core.errors import UserInputError

DEFAULT_BINS = 2048
INT8_MAX = 127
# TensorRT's entropy calibrator quantizes the reference distribution into 128 bins (the
# non-negative half of int8) and tries every clipping bin from 128 upwards.
ENTROPY_QUANT_BINS = 128
SMOOTHING = 1e-4
# MSE candidates scored per vectorised block (bounds the temporary candidates x bins matrix).
_BLOCK = 256


class AbsHistogram:
    """A streamed histogram of the non-zero |x| over [0, top], the count of exact zeros, and the max |x|.

    Exact zeros (half of every post-ReLU tensor) are kept out of the bins: they quantize without
    error at any scale, and as a spike in the first bin they would pull the entropy calibrator
    towards clipping far too much.
    """

    def __init__(self, bins: int = DEFAULT_BINS) -> None:
        if bins & (bins - 1) or bins < ENTROPY_QUANT_BINS:
            raise ValueError(f"bins must be a power of two >= {ENTROPY_QUANT_BINS}, got {bins}")
        self.counts = np.zeros(bins, np.int64)
        self.zeros = 0
        self.top = 0.0  # right edge of the last bin; 0 until a non-zero value arrives
        self.amax = 0.0  # exact max |x|

    @property
    def bins(self) -> int:
        return len(self.counts)

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0.0, self.top, self.bins + 1)

    def update(self, values: np.ndarray) -> None:
        x = np.abs(np.asarray(values, dtype=np.float32).ravel())
        if not x.size:
            return
        batch_max = float(x.max())
        if not np.isfinite(batch_max):  # inf/nan are not data ranges (they saturate anyway)
            x = x[np.isfinite(x)]
            batch_max = float(x.max()) if x.size else 0.0
        nonzero = x[x > 0] if batch_max > 0 else x[:0]
        self.zeros += x.size - nonzero.size
        self.amax = max(self.amax, batch_max)
        if not nonzero.size:
            return
        self._grow_to(batch_max)
        nonzero *= self.bins / self.top
        index = nonzero.astype(np.intp)
        np.minimum(index, self.bins - 1, out=index)
        self.counts += np.bincount(index, minlength=self.bins)

    def _grow_to(self, value: float) -> None:
        if self.top == 0.0:
            self.top = value
            return
        factor = 1
        while self.top * factor < value:
            factor *= 2
        if factor == 1:
            return
        # Doubling the range merges each pair of bins exactly; more doublings, more merging.
        merge = min(factor, self.bins)
        merged = self.counts.reshape(-1, merge).sum(axis=1)
        self.counts = np.concatenate([merged, np.zeros(self.bins - merged.size, np.int64)])
        self.top *= factor


def minmax_amax(hist: AbsHistogram) -> float:
    return hist.amax


def percentile_amax(hist: AbsHistogram, percentile: float = 99.99) -> float:
    """The |x| value below which ``percentile`` % of the values lie (to one bin's width)."""
    if not 0 < percentile <= 100:
        raise UserInputError(f"percentile {percentile} is not in (0, 100]", hint="e.g. --percentile 99.99")
    total = hist.counts.sum() + hist.zeros
    if hist.counts.sum() == 0 or percentile == 100:
        return hist.amax
    cdf = (np.cumsum(hist.counts) + hist.zeros) / total
    index = int(np.searchsorted(cdf, percentile / 100.0))
    return min(float(hist.edges[index + 1]), hist.amax)


def entropy_amax(hist: AbsHistogram) -> float:
    """TensorRT's entropy calibration: the clipping bin minimising KL(P || Q).

    For each candidate bin count ``i`` (128 .. bins), P is the histogram clipped at ``i`` with
    the outliers added to its last bin; Q is P's first ``i`` bins merged into 128 levels and
    expanded back evenly over each level's non-empty bins. Because Q is flat over the non-empty
    bins of a level, KL(P || Q) needs only per-level sums, so all candidates are scored at once
    from cumulative sums (O(candidates x 128), not O(candidates x bins)).
    """
    counts = hist.counts.astype(np.float64)
    total = counts.sum()
    if total == 0 or hist.top == 0.0:
        return hist.amax
    candidates = np.arange(ENTROPY_QUANT_BINS, hist.bins + 1)
    divergences = _entropy_divergences(counts, total, candidates)
    best = int(candidates[int(np.argmin(divergences))])
    return min(float(hist.edges[best]), hist.amax)


def _entropy_divergences(counts: np.ndarray, total: float, cands: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        h_log_h = np.where(counts > 0, counts * np.log(counts), 0.0)
    cum = np.concatenate([[0.0], np.cumsum(counts)])
    cum_hlh = np.concatenate([[0.0], np.cumsum(h_log_h)])
    cum_nonzero = np.concatenate([[0], np.cumsum(counts > 0)])
    i = cands.astype(np.int64)
    # sum p log p: bins below i-1 keep their counts, bin i-1 takes everything from i-1 upwards.
    last = (total - cum[i - 1]) / total
    with np.errstate(divide="ignore", invalid="ignore"):
        last_term = np.where(last > 0, last * np.log(last), 0.0)
    p_log_p = (cum_hlh[i - 1] - cum[i - 1] * np.log(total)) / total + last_term
    # sum p log q over the 128 levels: q is (level sum / non-empty bins) / (sum of the first i bins).
    m = (i // ENTROPY_QUANT_BINS)[:, None]
    g = np.arange(ENTROPY_QUANT_BINS)[None, :]
    start = g * m
    end = np.where(g == ENTROPY_QUANT_BINS - 1, i[:, None], start + m)
    level_sum = cum[end] - cum[start]
    level_nonzero = cum_nonzero[end] - cum_nonzero[start]
    outliers = total - cum[i]
    # Outliers land on an empty bin i-1: P has mass where Q has none. Q is smoothed there to
    # SMOOTHING (as MXNet and ONNX Runtime do) instead of an infinite divergence, which would forbid
    # clipping below any gap in the histogram, i.e. never clip a far outlier.
    gap = (counts[i - 1] == 0) & (outliers > 0)
    p_mass = level_sum.copy()
    p_mass[:, -1] += np.where(gap, 0.0, outliers)  # the outliers sit in the last level's last bin
    with np.errstate(divide="ignore", invalid="ignore"):
        log_q = np.log(level_sum / (level_nonzero * cum[i][:, None]))
        p_log_q = np.where(p_mass > 0, p_mass * log_q, 0.0).sum(axis=1) / total
    with np.errstate(divide="ignore", invalid="ignore"):
        gap_term = np.where(gap & (last > 0), last * np.log(SMOOTHING), 0.0)
    return p_log_p - p_log_q - gap_term


def mse_amax(hist: AbsHistogram, stride: int = 4) -> float:
    """The clipping value minimising the expected squared int8 quantization error over the histogram."""
    counts = hist.counts.astype(np.float64)
    if counts.sum() == 0 or hist.top == 0.0:
        return hist.amax
    edges = hist.edges
    centers = (edges[:-1] + edges[1:]) / 2
    candidates = edges[np.arange(ENTROPY_QUANT_BINS, hist.bins + 1, stride)]
    errors = np.concatenate([_mse_block(centers, counts, candidates[s:s + _BLOCK])
                             for s in range(0, candidates.size, _BLOCK)])
    return min(float(candidates[int(np.argmin(errors))]), hist.amax)


def _mse_block(centers: np.ndarray, counts: np.ndarray, amaxes: np.ndarray) -> np.ndarray:
    scale = amaxes[:, None] / INT8_MAX
    quantized = np.clip(np.round(centers[None, :] / scale), 0, INT8_MAX) * scale
    return ((centers[None, :] - quantized) ** 2 * counts[None, :]).sum(axis=1)


CalibrationMethod = Callable[[AbsHistogram], float]

METHODS: dict[str, CalibrationMethod] = {
    "minmax": minmax_amax,
    "percentile": percentile_amax,
    "entropy": entropy_amax,
    "mse": mse_amax,
}


def method(name: str, percentile: float = 99.99) -> CalibrationMethod:
    """The calibrator called ``name`` (percentile bound to its setting)."""
    if name not in METHODS:
        raise UserInputError(f"unknown calibration method '{name}'", hint=f"use one of: {', '.join(METHODS)}")
    if name == "percentile":
        return lambda hist: percentile_amax(hist, percentile)
    return METHODS[name]


def needs_histogram(name: str) -> bool:
    """Min-max only needs the running max; skipping the histogram makes it the cheapest method."""
    return name != "minmax"
