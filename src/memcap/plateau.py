"""The plateau estimate: the memorization a run would reach with unlimited steps, from the
memorization its training log recorded (docs/science.md#the-plateau-estimate).

Time is the cumulative learning rate in steps at the peak rate (`effective_steps`): a step at
half the rate counts half, so the warmup and a decaying rate stretch the clock instead of
bending the curve. A saturating curve of that time is fitted by least squares:

- a run with a constant phase (the plateau and constant schedules) is fitted over it (the
  warmup included); the asymptote is the memorization at the peak rate after unlimited steps.
  When the log goes on into a decay, what the decay added over the fitted curve at the end
  (`decay_gain`) is added: unlimited steps at the peak rate, then the same decay;
- a run whose rate decays throughout (cosine, linear) gets no estimate: fitted over its whole
  curve, or over its high-rate part with the rest's gain added, the estimate runs to the
  data's ceiling or overshoots what longer runs reach (docs/science.md).

A fit that does not pin the plateau down gives no estimate either.

The CI is the fit's standard error of the asymptote (from the least-squares covariance),
widened for the residuals' autocorrelation (evaluations of one model are not independent
draws), as a normal interval; both ends are clipped to what the data can hold (`ceiling`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# the candidate saturating forms f(x; M∞, τ, k) of effective steps x, each with f(0) = 0 and
# f(∞) = M∞; benchmarks/plateau_estimate.py compares them (the 2-parameter forms ignore k)
FORMS = ("exp", "stretched", "lomax", "hill")
FORM = "hill"
MIN_POINTS = 5  # evaluations a fit needs (after step 0)


def curve(form: str, x: np.ndarray, m_inf: float, tau: float, k: float = 1.0) -> np.ndarray:
    """The saturating form `form` at effective steps x."""
    x = np.maximum(np.asarray(x, float), 0.0)
    if form == "exp":
        return m_inf * -np.expm1(-x / tau)
    if form == "stretched":
        return m_inf * -np.expm1(-((x / tau) ** k))
    if form == "lomax":
        return m_inf * (1.0 - (1.0 + x / tau) ** -k)
    if form == "hill":
        return m_inf / (1.0 + (tau / np.maximum(x, 1e-12)) ** k)
    raise ValueError(f"unknown plateau form {form!r}; one of {FORMS}")


def n_params(form: str) -> int:
    return 2 if form == "exp" else 3


@dataclass(frozen=True)
class PlateauEstimate:
    """A run's plateau estimate: value and CI in bits (None when there is none), what was
    fitted (or why nothing was), the asymptote of the fitted curve and the decay's gain."""

    value: float | None
    ci_low: float | None
    ci_high: float | None
    fit: str
    asymptote: float | None = None
    decay_gain: float | None = None


def effective_steps(step: np.ndarray, lr: np.ndarray) -> np.ndarray:
    """Cumulative learning rate at each evaluation, in steps at the peak rate: the trapezoid
    rule over the logged rates (the rate of each evaluation's last step)."""
    step, lr = np.asarray(step, float), np.asarray(lr, float)
    peak = lr.max() if lr.size and lr.max() > 0 else 1.0
    mid = (lr[1:] + lr[:-1]) / 2 * np.diff(step)
    return np.concatenate([[step[0] * lr[0]], step[0] * lr[0] + np.cumsum(mid)]) / peak


def constant_phase(lr: np.ndarray) -> int | None:
    """Index of the last evaluation at the peak rate when the run has a constant phase (at
    least MIN_POINTS evaluations at the peak rate: the plateau and constant schedules), else
    None (the rate decays throughout: cosine, linear)."""
    lr = np.asarray(lr, float)
    at_peak = np.flatnonzero(lr >= lr.max() * (1 - 1e-6))
    return int(at_peak[-1]) if at_peak.size >= MIN_POINTS else None


# an estimate is reported only when the fit pins it down: its CI's half-width at most this
# share of it, and its asymptote not at the fit's upper bound (100 times the largest value:
# a curve that has not bent). The fit is not bounded by the data's ceiling (a run on its way
# to holding all its data extrapolates past it); the estimate and its CI are clipped to it.
IDENTIFIED = 0.5


# the least-squares loss: soft L1 (scipy) is robust to the spikes of a constant rate, where
# a loss spike drops memorization for an evaluation or two before it recovers; residuals
# beyond LOSS_SCALE of the largest value count less than squared
LOSS = "soft_l1"
LOSS_SCALE = 0.01


def fit_curve(x: np.ndarray, y: np.ndarray, form: str, ceiling: float | None = None,
              loss: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares parameters (M∞, τ, k) of `form` and their covariance. Bounds: M∞ between
    the largest observed value's half and `ceiling` (or 100 times that value), τ within
    (0, 1000·x_max], k within [0.2, 5]."""
    from scipy.optimize import curve_fit

    top = float(np.max(y))
    hi = float(ceiling) if ceiling else 100.0 * max(top, 1.0)
    hi = max(hi, top * 1.0001, 1e-9)
    xmax = float(np.max(x))
    half = x[np.argmax(y >= top / 2)] if top > 0 else xmax
    starts = [(min(top * 1.05, hi), max(half, 1e-6), 1.0),
              (min(top * 1.5, hi), max(half * 3, 1e-6), 0.6)]
    lo_b = [max(top / 2, 0.0), 1e-6 * max(xmax, 1.0), 0.2]
    hi_b = [hi, 1e3 * max(xmax, 1.0), 5.0]
    k = n_params(form)
    best = None
    for p0 in starts:
        p0 = np.clip(p0, lo_b, hi_b)[:k]
        try:
            popt, pcov = curve_fit(lambda xx, *p: curve(form, xx, *p), x, y, p0=p0,
                                   bounds=(lo_b[:k], hi_b[:k]), max_nfev=20000,
                                   loss=loss or LOSS, f_scale=LOSS_SCALE * max(top, 1e-9))
        except (RuntimeError, ValueError):
            continue
        sse = float(np.sum((curve(form, x, *popt) - y) ** 2))
        if best is None or sse < best[0]:
            best = (sse, popt, pcov)
    if best is None:
        raise RuntimeError("the fit did not converge")
    return best[1], best[2]


def _autocorrelation(r: np.ndarray) -> float:
    if r.size < 3 or not np.any(r):
        return 0.0
    r = r - r.mean()
    return float(np.clip(np.sum(r[1:] * r[:-1]) / np.sum(r * r), 0.0, 0.9))


def estimate_plateau(step, mem, lr, *, ceiling: float | None = None, form: str = FORM,
                     loss: str = LOSS, level: float = 0.95) -> PlateauEstimate:
    """The plateau estimate of one model's training log (evaluations: step, mem_bits, lr).
    ceiling: the most the data can hold (memorizable bits), if known; form and loss: the
    saturating form and the least-squares loss (scipy's names: linear, soft_l1, ...)."""
    from scipy.stats import norm

    step, mem, lr = (np.asarray(v, float) for v in (step, mem, lr))
    order = np.argsort(step)
    step, mem, lr = step[order], mem[order], lr[order]
    ok = np.isfinite(mem) & np.isfinite(lr)
    step, mem, lr = step[ok], mem[ok], lr[ok]
    if step.size == 0 or lr.max() <= 0:
        return PlateauEstimate(None, None, None, "no evaluations")
    x = effective_steps(step, lr)
    end = constant_phase(lr)
    if end is None:
        return PlateauEstimate(None, None, None, "no constant phase: the rate decays throughout "
                                                 f"(fewer than {MIN_POINTS} evaluations at the "
                                                 "peak rate)")
    xs, ys = x[:end + 1], mem[:end + 1]
    keep = xs > 0
    if keep.sum() < MIN_POINTS:
        return PlateauEstimate(None, None, None, f"too few evaluations in the constant phase "
                                                 f"({int(keep.sum())}, {MIN_POINTS} needed)")
    try:
        popt, pcov = fit_curve(xs[keep], ys[keep], form, None, loss)
    except RuntimeError:
        return PlateauEstimate(None, None, None, "the fit did not converge")
    m_inf = float(popt[0])
    resid = ys[keep] - curve(form, xs[keep], *popt)
    rho = _autocorrelation(resid)
    se = math.sqrt(max(float(pcov[0, 0]), 0.0)) if np.all(np.isfinite(pcov)) else float("inf")
    se *= math.sqrt((1 + rho) / (1 - rho))
    decayed = end < step.size - 1
    # what the evaluations after the fitted phase (a decay) added over the fitted curve
    gain = float(mem[-1] - curve(form, x[-1], *popt)) if decayed else None
    what = (f"{form}, constant phase ({keep.sum()} evaluations)"
            + (" + decay gain" if decayed else ""))
    z = float(norm.ppf(0.5 + level / 2))
    if z * se > IDENTIFIED * m_inf or m_inf >= 0.999 * 100.0 * max(float(np.max(ys)), 1.0):
        return PlateauEstimate(None, None, None, f"not identified: {what} shows no plateau "
                                                 "yet", asymptote=m_inf, decay_gain=gain)
    cap = float(ceiling) if ceiling else math.inf
    value = min(m_inf + (gain or 0.0), cap)
    low = min(max(value - z * se, 0.0), cap)
    high = min(value + z * se, cap)
    return PlateauEstimate(value, low, high, what, asymptote=m_inf, decay_gain=gain)
