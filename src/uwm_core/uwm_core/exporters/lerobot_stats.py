"""Statistics of exported features as LeRobot computes them (``meta/stats.json`` and the
``stats/<feature>/<stat>`` episode columns): min, max, mean, std, count and quantiles q01 .. q99."""
from __future__ import annotations

import re

import numpy as np

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)  # stats q01 .. q99, as lerobot's compute_stats


def feature_stats(values: np.ndarray) -> dict:
    """min/max/mean/std/count/quantiles over axis 0 of (T,) or (T, n) values, as lerobot's
    compute_episode_stats (1-D features keep a (1,) shape)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[:, None] if values.ndim == 1 else values
    stats = {"min": values.min(0), "max": values.max(0), "mean": values.mean(0), "std": values.std(0),
             "count": np.array([len(values)])}
    for q in QUANTILES:
        stats[f"q{int(round(q * 100)):02d}"] = np.quantile(values, q, axis=0)
    return stats


def image_stats(frames: np.ndarray, max_frames: int = 100) -> dict:
    """Per-channel statistics in [0, 1], shape (3, 1, 1), over up to max_frames evenly spaced frames;
    exact (np.quantile's linear interpolation included) from each channel's 256-bin histogram."""
    picked = frames[np.linspace(0, len(frames) - 1, min(len(frames), max_frames)).round().astype(int)]
    values = np.arange(256) / 255.0
    channels = []
    for c in range(3):
        counts = np.bincount(picked[..., c].ravel(), minlength=256)
        n, cumulative, present = counts.sum(), np.cumsum(counts), np.flatnonzero(counts)
        mean = (counts * values).sum() / n
        sorted_value = lambda k: values[np.searchsorted(cumulative, k, side="right")]  # noqa: E731 (k-th smallest)
        stats = {"min": values[present[0]], "max": values[present[-1]], "mean": mean,
                 "std": np.sqrt((counts * (values - mean) ** 2).sum() / n)}
        for q in QUANTILES:
            position = q * (n - 1)
            low, high = sorted_value(np.floor(position)), sorted_value(np.ceil(position))
            stats[f"q{int(round(q * 100)):02d}"] = low + (position - np.floor(position)) * (high - low)
        channels.append(stats)
    result = {k: np.array([s[k] for s in channels]).reshape(3, 1, 1) for k in channels[0]}
    result["count"] = np.array([len(picked)])
    return result


def aggregate_stats(per_episode: list[dict]) -> dict:
    """Dataset statistics from episode statistics (counts weight means, variances and quantiles;
    the variance by the parallel formula), as lerobot's aggregate_stats."""
    total = {}
    for key in per_episode[0]:
        stats = [s[key] for s in per_episode]
        counts = np.array([s["count"][0] for s in stats], dtype=np.float64)
        weights = counts.reshape(-1, *([1] * stats[0]["mean"].ndim)) / counts.sum()
        means = np.stack([s["mean"] for s in stats])
        mean = (weights * means).sum(0)
        variance = (weights * (np.stack([s["std"] for s in stats]) ** 2 + (means - mean) ** 2)).sum(0)
        total[key] = {"min": np.min([s["min"] for s in stats], axis=0), "max": np.max([s["max"] for s in stats], axis=0),
                      "mean": mean, "std": np.sqrt(variance), "count": np.array([int(counts.sum())])}
        for q in [k for k in stats[0] if re.fullmatch(r"q\d\d", k)]:
            total[key][q] = (weights * np.stack([s[q] for s in stats])).sum(0)
    return total



def stats_columns(stats: dict) -> dict:
    """Flattened ``stats/<feature>/<stat>`` episode columns."""
    return {f"stats/{feature}/{name}": value.tolist() for feature, s in stats.items() for name, value in s.items()}

