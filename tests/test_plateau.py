"""The plateau estimate (memcap.plateau): known asymptotes recovered from noisy curves."""

import numpy as np
import pytest

from memcap.plateau import (
    FORM,
    FORMS,
    constant_phase,
    curve,
    effective_steps,
    estimate_plateau,
    fit_curve,
    jacobian,
)


def plateau_lr(steps: np.ndarray, peak: float = 0.03, warmup: int = 400,
               decay_from: int | None = None, decay: int = 0) -> np.ndarray:
    """The logged rate at each evaluation: linear warmup, constant, then (from decay_from)
    a cosine decay to 0 over `decay` steps, as memcap.stages.train.lr_at."""
    s = np.maximum(steps - 1, 0).astype(float)
    lr = np.where(s < warmup, peak * (s + 1) / warmup, peak)
    if decay_from is not None:
        prog = np.clip((s - decay_from) / decay, 0, 1)
        lr = np.where(s >= decay_from, peak * 0.5 * (1 + np.cos(np.pi * prog)), lr)
    return lr


def noisy(values: np.ndarray, rel: float, rng: np.random.Generator, rho: float = 0.5):
    """values with AR(1) noise of relative size rel (evaluations of one model correlate)."""
    e = np.zeros(values.size)
    for i in range(1, values.size):
        e[i] = rho * e[i - 1] + rng.normal(0, rel * np.sqrt(1 - rho ** 2))
    return values * (1 + e)


STEPS = np.arange(0, 8001, 100)


@pytest.mark.parametrize("form", FORMS)
def test_each_form_recovers_a_known_asymptote_from_a_noisy_curve(form):
    rng = np.random.default_rng(1)
    lr = plateau_lr(STEPS)
    x = effective_steps(STEPS, lr)
    truth = 30_000.0
    mem = noisy(curve(form, x, truth, 900.0, 0.7), 0.01, rng)
    est = estimate_plateau(STEPS, mem, lr, form=form)
    assert est.value == pytest.approx(truth, rel=0.03), est
    assert est.ci_low < est.value < est.ci_high
    assert "constant phase" in est.fit and est.decay_gain is None


def test_the_first_quarter_of_a_long_curve_recovers_the_asymptote():
    """Fitted on the first quarter only (steps ≤ 2,000 of 8,000, where the curve holds 85 % of
    its asymptote), across 30 noisy replicates of the estimator's own form: the median error
    is small and the 95 % CI covers the truth in most replicates."""
    rng = np.random.default_rng(0)
    lr = plateau_lr(STEPS)
    x = effective_steps(STEPS, lr)
    truth = 34_000.0
    quarter = STEPS <= 2000
    errors, covered = [], 0
    for _ in range(30):
        mem = noisy(curve(FORM, x, truth, 200.0, 0.8), 0.015, rng)
        est = estimate_plateau(STEPS[quarter], mem[quarter], lr[quarter])
        errors.append(abs(est.value / truth - 1))
        covered += est.ci_low <= truth <= est.ci_high
    assert np.median(errors) < 0.03
    assert covered >= 0.75 * 30


def test_a_decay_adds_its_gain_to_the_asymptote():
    """A plateau-schedule log: the constant phase is fitted, and what the decay added over the
    fitted curve is added to the asymptote."""
    steps = np.arange(0, 6001, 100)
    lr = plateau_lr(steps, decay_from=4000, decay=2000)
    x = effective_steps(steps, lr)
    base = curve(FORM, x, 20_000.0, 500.0, 1.0)
    ramp = np.clip((steps - 4000) / 2000, 0, 1)
    mem = base + 1_500.0 * ramp  # the decay collects 1,500 bits over the fitted curve
    assert constant_phase(lr) == 40
    est = estimate_plateau(steps, mem, lr)
    assert est.decay_gain == pytest.approx(1_500.0, rel=0.02)
    assert est.value == pytest.approx(21_500.0, rel=0.01)
    assert "decay gain" in est.fit


def test_a_rate_that_decays_throughout_gets_no_estimate():
    """Cosine: no constant phase to extrapolate (docs/science.md#the-plateau-estimate)."""
    steps = np.arange(0, 1501, 50)
    s = np.maximum(steps - 1, 0)
    lr = np.where(s < 75, 0.1 * (s + 1) / 75, 0.1 * 0.5 * (1 + np.cos(np.pi * (s - 75) / 1425)))
    assert constant_phase(lr) is None
    mem = curve(FORM, effective_steps(steps, lr), 4_000.0, 100.0, 1.2)
    est = estimate_plateau(steps, mem, lr)
    assert est.value is None and est.fit.startswith("no constant phase")


def test_a_curve_that_shows_no_plateau_gets_no_estimate():
    lr = plateau_lr(STEPS)
    x = effective_steps(STEPS, lr)
    rising = 2.0 * x  # memorization still growing in proportion to the steps
    est = estimate_plateau(STEPS, rising, lr, ceiling=1e6)
    assert est.value is None and est.fit.startswith("not identified")


def test_the_estimate_never_exceeds_what_the_data_hold():
    lr = plateau_lr(STEPS)
    x = effective_steps(STEPS, lr)
    mem = noisy(curve(FORM, x, 12_000.0, 300.0, 1.0), 0.01, np.random.default_rng(3))
    est = estimate_plateau(STEPS, mem, lr, ceiling=11_904.0)
    assert est.value <= 11_904.0 and est.ci_high <= 11_904.0


def test_effective_steps_count_the_peak_rate_as_one_step():
    lr = plateau_lr(STEPS, warmup=400)
    x = effective_steps(STEPS, lr)
    assert x[0] == 0 and np.all(np.diff(x) > 0)
    assert x[-1] == pytest.approx(8000 - 200, abs=2)  # the warmup counts half


def test_too_few_evaluations_give_no_estimate():
    est = estimate_plateau([0, 100, 200], [0.0, 10.0, 12.0], [0.01, 0.03, 0.03])
    assert est.value is None and "fewer than 5 evaluations" in est.fit


# A smoke-sized run (configs/smoke.yaml's V 16, S 16, batch 32, lr 0.03, 300 steps, an
# evaluation every 50) at a constant rate, trained by memcap's trainer: L1-d16 at N 128, seed 0
# (on its way up: a wide CI), and L1-d16 at N 32, seed 1 (saturated: a narrow one).
SMOKE_STEPS = np.arange(0, 301, 50)
SMOKE_LR = np.array([0.002] + [0.03] * 6)
SMOKE_RISING = np.array([17.3545, 492.7827, 1516.8885, 2561.5881, 3100.6409, 3354.7587,
                         3772.5219])
SMOKE_SATURATED = np.array([6.435, 1437.4156, 1813.3152, 1868.9699, 1870.4084, 1868.3455,
                            1868.5232])


def long_log(seed: int = 0):
    """A well-identified curve: 80 noisy evaluations of a Hill curve, warmup then constant."""
    lr = plateau_lr(STEPS)
    x = effective_steps(STEPS, lr)
    return STEPS, noisy(curve(FORM, x, 30_000.0, 900.0, 0.7), 0.01,
                        np.random.default_rng(seed)), lr


def assert_stable(steps, mem, lr, **kw):
    """Estimate and CI of a log equal those of the log with its values moved by 1e-12
    (relative) to 1e-9: round-off in the log is not a different result."""
    base = estimate_plateau(steps, mem, lr, **kw)
    assert base.value is not None, base
    rng = np.random.default_rng(0)
    for _ in range(5):
        moved = estimate_plateau(steps, mem * (1 + 1e-12 * rng.standard_normal(mem.size)), lr,
                                 **kw)
        assert moved.fit == base.fit
        for a, b in ((base.value, moved.value), (base.ci_low, moved.ci_low),
                     (base.ci_high, moved.ci_high)):
            assert b == pytest.approx(a, rel=1e-9, abs=0), (base, moved)
    return base


@pytest.mark.parametrize("mem", [SMOKE_RISING, SMOKE_SATURATED], ids=["rising", "saturated"])
def test_a_smoke_sized_log_gives_the_same_estimate_and_ci_to_round_off(mem):
    """Six evaluations in the constant phase. Fitted by scipy's curve_fit alone (stopped by its
    tolerances, a finite-difference Jacobian), these moved by 3e-8 and 3e-9 relative."""
    est = assert_stable(SMOKE_STEPS, mem, SMOKE_LR)
    assert est.ci_low < est.value < est.ci_high


@pytest.mark.parametrize("form", FORMS)
def test_a_well_identified_log_gives_the_same_estimate_and_ci_to_round_off(form):
    """80 evaluations; curve_fit alone moved the Hill estimate by 2-5e-9 relative, a Lomax
    one by 1e-7."""
    for seed in (0, 1):
        assert_stable(*long_log(seed), form=form)


def test_the_ci_is_curve_fits_standard_error():
    """The covariance is the one scipy's curve_fit reports for the same robust fit (weighted
    Gauss-Newton Hessian, residual scale), only computed where the fit has converged."""
    from scipy.optimize import curve_fit

    steps, mem, lr = long_log()
    x = effective_steps(steps, lr)[1:]
    y = mem[1:]
    fit = fit_curve(x, y, FORM)
    popt, pcov = curve_fit(lambda xx, *p: curve(FORM, xx, *p), x, y, p0=fit.params,
                           method="trf", loss="soft_l1", f_scale=0.01 * y.max())
    assert fit.params == pytest.approx(popt, rel=1e-6)
    assert np.sqrt(np.diag(fit.cov)) == pytest.approx(np.sqrt(np.diag(pcov)), rel=1e-4)


@pytest.mark.parametrize("form", FORMS)
def test_the_analytic_jacobian_is_the_curves_derivative(form):
    x = np.array([0.5, 3.0, 40.0, 400.0, 5000.0])
    p = np.array([1_000.0, 60.0, 0.8])[:2 if form == "exp" else 3]
    jac = jacobian(form, x, *p)
    for i in range(p.size):
        h = 1e-6 * p[i]
        up, down = p.copy(), p.copy()
        up[i] += h
        down[i] -= h
        numeric = (curve(form, x, *up) - curve(form, x, *down)) / (2 * h)
        assert jac[:, i] == pytest.approx(numeric, rel=1e-6, abs=1e-9 * p[0])


def test_a_curve_flat_from_its_first_evaluation_gets_no_estimate():
    """Saturated before the first evaluation: the bend lies before the data, a shape parameter
    runs to its bound, and the covariance there would mean nothing."""
    flat = np.array([0.6, 475.3, 475.1, 475.4, 475.2, 475.3, 475.2])
    est = estimate_plateau(SMOKE_STEPS, flat, SMOKE_LR)
    assert est.value is None and est.ci_low is None
    assert est.fit.startswith("not identified") and "at its bound" in est.fit


def test_duplicate_evaluations_in_any_order_give_one_estimate():
    steps, mem, lr = long_log()
    twice = np.concatenate([np.arange(steps.size), np.arange(steps.size)])
    a = estimate_plateau(steps[twice], mem[twice], lr[twice])
    b = estimate_plateau(steps[twice[::-1]], mem[twice[::-1]], lr[twice[::-1]])
    assert (a.value, a.ci_low, a.ci_high) == (b.value, b.ci_low, b.ci_high)
