"""Accuracy figures of estimated parameter maps against the truth."""

from __future__ import annotations

import numpy as np

__all__ = ["rmse", "bias", "r_squared", "summary"]


def _pair(true: np.ndarray, est: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(true, dtype=np.float64).reshape(-1)
    e = np.asarray(est, dtype=np.float64).reshape(-1)
    if t.shape != e.shape:
        raise ValueError(f"est: expected {t.size} values like true, got {e.size}")
    keep = np.isfinite(t) & np.isfinite(e)
    return t[keep], e[keep]


def rmse(true: np.ndarray, est: np.ndarray) -> float:
    """Root-mean-square error over finite pairs (units of the inputs)."""
    t, e = _pair(true, est)
    return float(np.sqrt(np.mean((e - t) ** 2))) if t.size else float("nan")


def bias(true: np.ndarray, est: np.ndarray) -> float:
    """Mean of est − true over finite pairs."""
    t, e = _pair(true, est)
    return float(np.mean(e - t)) if t.size else float("nan")


def r_squared(true: np.ndarray, est: np.ndarray) -> float:
    """Coefficient of determination 1 − Σ(e − t)²/Σ(t − t̄)² (of the identity line, not a fit)."""
    t, e = _pair(true, est)
    if t.size < 2:
        return float("nan")
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    return 1.0 - float(np.sum((e - t) ** 2)) / ss_tot if ss_tot > 0 else float("nan")


def summary(true: np.ndarray, est: np.ndarray) -> dict[str, float]:
    """``{"rmse", "bias", "r2", "n"}`` of one parameter; NaN pairs are left out and counted."""
    t, _ = _pair(true, est)
    return {"rmse": rmse(true, est), "bias": bias(true, est), "r2": r_squared(true, est), "n": int(t.size),
            "n_invalid": int(np.asarray(true).size - t.size)}
