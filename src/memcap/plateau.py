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

A fit that does not pin the plateau down gives no estimate either: a CI too wide, the
asymptote or a shape parameter at a bound of the fit, or parameters that trade off.

The CI is the fit's standard error of the asymptote (from the least-squares covariance),
widened for the residuals' autocorrelation (evaluations of one model are not independent
draws), as a normal interval; both ends are clipped to what the data can hold (`ceiling`).

Estimate and CI are a function of the log down to round-off (`fit_curve`): a change in the
log's last digits moves them by about as much, not by the optimizer's tolerance, so a log
gives the same numbers in every run of the workflow.
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
# share of it, its asymptote not at the fit's upper bound (100 times the largest value: a
# curve that has not bent), no parameter at a bound and no two that trade off (fit_curve).
# The fit is not bounded by the data's ceiling (a run on its way to holding all its data
# extrapolates past it); the estimate and its CI are clipped to it.
IDENTIFIED = 0.5


# the least-squares loss: soft L1 (scipy) is robust to the spikes of a constant rate, where
# a loss spike drops memorization for an evaluation or two before it recovers; residuals
# beyond LOSS_SCALE of the largest value count less than squared
LOSS = "soft_l1"
LOSS_SCALE = 0.01

# The fit is a function of the log down to round-off. scipy's trust-region search (what
# curve_fit runs) stops where the cost stops falling measurably: that pins the parameters to
# about the square root of the float precision at best, and with its default tolerances and
# finite-difference Jacobian to 1e-8-1e-5 relative, at a point that depends on the search's
# path, so the last digits of a log moved estimate and CI by up to 4e-6 relative, and where
# two starts ended in different minima picked one by a sum of squares it did not minimize
# (an exponential fit of a validation curve jumped by 3 %). Here: the analytic Jacobian;
# the start with the lowest robust cost (what is minimized); then Gauss-Newton steps on the
# cost's gradient, which compare no costs, to the stationary point (at most POLISH_STEPS);
# the covariance from the Jacobian there, weighted as curve_fit weights it (its pcov,
# without the pseudo-inverse that drops small singular values). A parameter at a bound
# (within AT_BOUND of it, relative, or a step that leaves the bounds: the constraint, not
# the data, fixes it and the covariance means nothing) or a column-scaled, weighted
# Jacobian with a condition number above COND_MAX (parameters that trade off): no estimate.
POLISH_STEPS = 100
AT_BOUND = 1e-6
COND_MAX = 1e6
PARAM_NAMES = ("M∞", "τ", "k")


def jacobian(form: str, x: np.ndarray, m_inf: float, tau: float, k: float = 1.0) -> np.ndarray:
    """d curve(form, x, ...) / d(M∞, τ[, k]): one row per x (x > 0), one column per
    parameter."""
    x = np.maximum(np.asarray(x, float), 1e-12)
    if form == "exp":
        e = np.exp(-x / tau)
        return np.column_stack([-np.expm1(-x / tau), -m_inf * x * e / tau ** 2])
    if form == "stretched":
        u = (x / tau) ** k
        e = np.exp(-u)
        return np.column_stack([-np.expm1(-u), -m_inf * e * u * k / tau,
                                m_inf * e * u * np.log(x / tau)])
    if form == "lomax":
        b = 1.0 + x / tau
        bk = b ** -k
        return np.column_stack([1.0 - bk, -m_inf * k * x * bk / (b * tau ** 2),
                                m_inf * bk * np.log(b)])
    if form == "hill":
        from scipy.special import expit

        lg = np.log(tau / x)
        s = expit(-k * lg)  # 1 / (1 + (τ/x)^k), without overflow
        d = s * (1.0 - s)
        return np.column_stack([s, -m_inf * k * d / tau, -m_inf * lg * d])
    raise ValueError(f"unknown plateau form {form!r}; one of {FORMS}")


def _rho(loss: str, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """scipy's robust loss `loss` at z = (residual / scale)²: ρ(z), ρ'(z), ρ''(z)."""
    if loss == "linear":
        return z, np.ones_like(z), np.zeros_like(z)
    if loss == "soft_l1":
        t = 1.0 + z
        return 2.0 * (np.sqrt(t) - 1.0), t ** -0.5, -0.5 * t ** -1.5
    if loss == "huber":
        big = z > 1.0
        zs = np.where(big, z, 1.0)
        return (np.where(big, 2.0 * np.sqrt(zs) - 1.0, z), np.where(big, zs ** -0.5, 1.0),
                np.where(big, -0.5 * zs ** -1.5, 0.0))
    if loss == "cauchy":
        t = 1.0 + z
        return np.log1p(z), 1.0 / t, -1.0 / t ** 2
    if loss == "arctan":
        t = 1.0 + z ** 2
        return np.arctan(z), 1.0 / t, -2.0 * z / t ** 2
    raise ValueError(f"unknown least-squares loss {loss!r}")


def _polish(form: str, x: np.ndarray, y: np.ndarray, p: np.ndarray, loss: str, scale: float,
            lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, int | None]:
    """Gauss-Newton steps (iteratively reweighted least squares) from p to where the robust
    cost's gradient, sum ρ'·r·J, vanishes; and the index of a parameter whose step left the
    bounds (the stationary point lies beyond them), else None. A step that raises the cost
    beyond round-off (one that overshoots) ends it."""
    def cost(q: np.ndarray) -> float:
        return float(np.sum(_rho(loss, ((curve(form, x, *q) - y) / scale) ** 2)[0]))

    c = cost(p)
    for _ in range(POLISH_STEPS):
        r = curve(form, x, *p) - y
        w = np.sqrt(_rho(loss, (r / scale) ** 2)[1])
        a = jacobian(form, x, *p) * w[:, None]
        norm = np.linalg.norm(a, axis=0)
        if not np.all(np.isfinite(a)) or np.any(norm == 0):
            break
        step = np.linalg.lstsq(a / norm, -r * w, rcond=None)[0] / norm
        q = p + step
        if not np.all(np.isfinite(q)):
            break
        out = np.flatnonzero((q <= lo) | (q >= hi))
        if out.size:
            return p, int(out[0])
        cq = cost(q)
        if not cq <= c * (1.0 + 1e-9) + 1e-300:
            break
        p, c = q, cq
        if np.all(np.abs(step) <= 4.0 * np.finfo(float).eps * np.abs(p)):
            break
    return p, None


@dataclass(frozen=True)
class Fit:
    """A least-squares fit: the parameters (M∞, τ[, k]), their covariance, and, when the fit
    pins nothing down (no covariance), why."""

    params: np.ndarray
    cov: np.ndarray | None
    problem: str | None = None


def fit_curve(x: np.ndarray, y: np.ndarray, form: str, ceiling: float | None = None,
              loss: str | None = None) -> Fit:
    """Least-squares parameters (M∞, τ, k) of `form` and their covariance. Bounds: M∞ between
    the largest observed value's half and `ceiling` (or 100 times that value), τ within
    [1e-6, 1000]·x_max, k within [0.2, 5]. Raises RuntimeError when no start converges."""
    import warnings

    from scipy.optimize import least_squares

    x, y = np.asarray(x, float), np.asarray(y, float)
    loss = loss or LOSS
    _rho(loss, np.zeros(1))  # an unknown loss raises here
    top = float(np.max(y))
    scale = LOSS_SCALE * max(top, 1e-9)
    hi = float(ceiling) if ceiling else 100.0 * max(top, 1.0)
    hi = max(hi, top * 1.0001, 1e-9)
    xmax = float(np.max(x))
    half = x[np.argmax(y >= top / 2)] if top > 0 else xmax
    starts = [(min(top * 1.05, hi), max(half, 1e-6), 1.0),
              (min(top * 1.5, hi), max(half * 3, 1e-6), 0.6)]
    k = n_params(form)
    lo_b = np.array([max(top / 2, 0.0), 1e-6 * max(xmax, 1.0), 0.2])[:k]
    hi_b = np.array([hi, 1e3 * max(xmax, 1.0), 5.0])[:k]
    best = None
    for p0 in starts:
        p0 = np.clip(np.array(p0)[:k], lo_b, hi_b)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                res = least_squares(lambda p: curve(form, x, *p) - y, p0,
                                    jac=lambda p: jacobian(form, x, *p), bounds=(lo_b, hi_b),
                                    loss=loss, f_scale=scale, max_nfev=20000,
                                    ftol=1e-12, xtol=1e-12, gtol=1e-12)
        except (RuntimeError, ValueError):
            continue
        if res.status <= 0 or not np.all(np.isfinite(res.x)):
            continue
        if best is None or res.cost < best.cost:
            best = res
    if best is None:
        raise RuntimeError("the fit did not converge")
    p = best.x
    at = (p - lo_b <= AT_BOUND * np.abs(lo_b)) | (hi_b - p <= AT_BOUND * np.abs(hi_b))
    out = int(np.flatnonzero(at)[0]) if np.any(at) else None
    if out is None:
        p, out = _polish(form, x, y, p, loss, scale, lo_b, hi_b)
    if out is not None:
        bound = lo_b[out] if p[out] - lo_b[out] < hi_b[out] - p[out] else hi_b[out]
        return Fit(p, None, f"{PARAM_NAMES[out]} at its bound {bound:.4g}")
    r = curve(form, x, *p) - y
    z = (r / scale) ** 2
    rho, rho1, rho2 = _rho(loss, z)
    # the Gauss-Newton Hessian of the robust cost, as scipy weights it (its curve_fit's pcov)
    w = np.maximum(rho1 + 2.0 * rho2 * z, np.finfo(float).eps)
    a = jacobian(form, x, *p) * np.sqrt(w)[:, None]
    norm = np.linalg.norm(a, axis=0)
    if not np.all(np.isfinite(a)) or np.any(norm == 0):
        return Fit(p, None, "a parameter the curve does not depend on")
    _, sv, vt = np.linalg.svd(a / norm, full_matrices=False)
    cond = sv[0] / sv[-1] if sv[-1] > 0 else math.inf
    if cond > COND_MAX:
        return Fit(p, None, f"the parameters trade off (condition number {cond:.2g})")
    s_sq = scale ** 2 * float(np.sum(rho)) / (x.size - k) if x.size > k else math.inf
    cov = (vt.T / sv ** 2) @ vt / np.outer(norm, norm) * s_sq
    return Fit(p, cov)


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
    order = np.argsort(step, kind="stable")
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
        fit = fit_curve(xs[keep], ys[keep], form, None, loss)
    except RuntimeError:
        return PlateauEstimate(None, None, None, "the fit did not converge")
    popt = fit.params
    m_inf = float(popt[0])
    decayed = end < step.size - 1
    # what the evaluations after the fitted phase (a decay) added over the fitted curve
    gain = float(mem[-1] - curve(form, x[-1], *popt)) if decayed else None
    what = (f"{form}, constant phase ({keep.sum()} evaluations)"
            + (" + decay gain" if decayed else ""))
    if m_inf >= 0.999 * 100.0 * max(float(np.max(ys)), 1.0):
        return PlateauEstimate(None, None, None, f"not identified: {what} shows no plateau "
                                                 "yet", asymptote=m_inf, decay_gain=gain)
    if fit.cov is None:
        return PlateauEstimate(None, None, None, f"not identified: {what}, {fit.problem}",
                               asymptote=m_inf, decay_gain=gain)
    resid = ys[keep] - curve(form, xs[keep], *popt)
    rho = _autocorrelation(resid)
    se = math.sqrt(max(float(fit.cov[0, 0]), 0.0))
    se *= math.sqrt((1 + rho) / (1 - rho))
    z = float(norm.ppf(0.5 + level / 2))
    if z * se > IDENTIFIED * m_inf:
        return PlateauEstimate(None, None, None, f"not identified: {what} shows no plateau "
                                                 "yet", asymptote=m_inf, decay_gain=gain)
    cap = float(ceiling) if ceiling else math.inf
    value = min(m_inf + (gain or 0.0), cap)
    low = min(max(value - z * se, 0.0), cap)
    high = min(value + z * se, cap)
    return PlateauEstimate(value, low, high, what, asymptote=m_inf, decay_gain=gain)
