"""Time grids and the KTS gain (Mathematics §3): hand-computed values and invalid input."""
import math

import pytest
import torch

from kpe_lib import KTS, time_grid
from kpe_lib.grids import validate_grid


def test_uniform_and_cosine_grids():
    assert torch.equal(time_grid(4), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64))
    g = time_grid(6, "cosine")
    expect = [(1 - math.cos(math.pi * i / 6)) / 2 for i in range(7)]
    assert torch.allclose(g, torch.tensor(expect, dtype=torch.float64), atol=1e-15)
    assert g[0] == 0 and g[-1] == 1 and bool((g[1:] > g[:-1]).all())


@pytest.mark.parametrize("n", [0, -3, 2.5, True])
def test_grid_rejects_bad_n_steps(n):
    with pytest.raises(ValueError, match="n_steps"):
        time_grid(n)


def test_grid_rejects_bad_kind_and_bad_custom_grid():
    with pytest.raises(ValueError, match="kind"):
        time_grid(10, "log")
    with pytest.raises(ValueError, match="increasing"):
        validate_grid(torch.tensor([0.0, 0.5, 0.4, 1.0]))
    with pytest.raises(ValueError, match="start at 0 and end at 1"):
        validate_grid(torch.tensor([0.0, 0.5, 0.9]))


# Mathematics §3 "handy values" of the default landing (k = 3, s = 0.6).
@pytest.mark.parametrize("beta0,t,expected", [
    (0.01, 1.0, 0.809), (0.02, 1.0, 0.618), (0.05, 1.0, 0.046),
    (0.01, 0.99, 0.824), (0.02, 0.99, 0.647), (0.05, 0.99, 0.118),
])
def test_handy_values(beta0, t, expected):
    assert round(KTS(beta0=beta0)(t), 3) == pytest.approx(expected, abs=1e-12)


def test_every_form_matches_the_table():
    s, k, a0, b0 = 0.5, 2.0, 0.3, 0.04
    t_early, t_late = 0.2, 0.8
    r = (t_late - s) / (1 - s)
    launch = {
        "linear": a0 * (1 - t_early / s),
        "constant": a0,
        "exponential": a0 * (math.exp(k * (1 - t_early / s)) - 1) / (math.exp(k) - 1),
    }
    landing = {"exponential": b0 * (math.exp(k * r) - 1), "linear": b0 * r, "constant": b0}
    for lf, alpha in launch.items():
        for nf, beta in landing.items():
            g = KTS(alpha0=a0, beta0=b0, tau_split=s, launch=lf, landing=nf, k=k)
            assert g(t_early) == pytest.approx(1 + alpha, rel=1e-14)
            assert g(t_late) == pytest.approx(1 - beta, rel=1e-14)


def test_defaults_are_identity_and_tensor_calls_keep_shape():
    g = KTS()
    assert g.is_identity and g(0.3) == 1.0 and g(0.99) == 1.0
    t = torch.linspace(0, 1, 11, dtype=torch.float64).reshape(11, 1)
    out = KTS(alpha0=0.1, beta0=0.01)(t)
    assert isinstance(out, torch.Tensor) and out.shape == (11, 1)
    assert out[0, 0] == pytest.approx(1.1) and out[-1, 0] == pytest.approx(KTS(beta0=0.01)(1.0))
    # the linear launch and exponential landing are continuous at tau_split
    g = KTS(alpha0=0.2, beta0=0.01)
    assert g(0.6 - 1e-12) == pytest.approx(1.0, abs=1e-9) and g(0.6) == 1.0


@pytest.mark.parametrize("kwargs,name", [
    (dict(tau_split=0.0), "tau_split"), (dict(tau_split=1.0), "tau_split"), (dict(tau_split=1.5), "tau_split"),
    (dict(alpha0=-0.1), "alpha0"), (dict(beta0=-0.01), "beta0"), (dict(k=0.0), "k"), (dict(k=-1.0), "k"),
    (dict(launch="cubic"), "launch"), (dict(landing="sigmoid"), "landing"),
    (dict(beta0=0.06), "beta0"),                      # exponential: eta(1) = 1 - 19.09 * 0.06 < 0
    (dict(beta0=1.0, landing="linear"), "beta0"), (dict(beta0=1.2, landing="constant"), "beta0"),
    (dict(alpha0=float("nan")), "alpha0"), (dict(beta0="0.1"), "beta0"),
])
def test_invalid_configurations_name_the_parameter(kwargs, name):
    with pytest.raises(ValueError, match=name):
        KTS(**kwargs)


def test_largest_valid_landing_is_accepted():
    limit = 1 / math.expm1(3.0)
    assert KTS(beta0=0.999 * limit)(1.0) > 0
    with pytest.raises(ValueError, match="eta"):
        KTS(beta0=limit)
