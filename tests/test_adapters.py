"""Adapters for other velocity conventions give the same samples as the native one."""
import torch

from kpe_lib import KTS, sample
from kpe_lib.adapters import ReversedTime, TimeFirst


def native(x, t):
    return torch.sin(2 * x) + t[:, None] * x


def test_time_first_models_give_identical_samples():
    x0 = torch.randn(8, 2, dtype=torch.float64)
    ref = sample(native, x0, n_steps=20, solver="heun", gain=KTS(alpha0=0.1))
    batched = sample(TimeFirst(lambda t, x: native(x, t), scalar_time=False), x0, n_steps=20, solver="heun", gain=KTS(alpha0=0.1))
    scalar = sample(TimeFirst(lambda t, x: native(x, t.expand(len(x)))), x0, n_steps=20,
                    solver="heun", gain=KTS(alpha0=0.1))
    assert torch.equal(ref.x, batched.x) and torch.equal(ref.kpe, batched.kpe)
    assert torch.equal(ref.x, scalar.x)


def test_reversed_time_models_give_the_same_samples():
    # a model in time s = 1 - t (s = 1 noise) has velocity u(x, s) = -v(x, 1 - s)
    reversed_model = lambda x, s: -native(x, 1.0 - s)
    x0 = torch.randn(8, 2, dtype=torch.float64)
    ref = sample(native, x0, n_steps=20, solver="rk4")
    out = sample(ReversedTime(reversed_model), x0, n_steps=20, solver="rk4")
    assert torch.allclose(ref.x, out.x, atol=1e-14) and torch.allclose(ref.kpe, out.kpe, rtol=1e-13)


def test_time_first_passes_a_zero_dim_time_by_default():
    seen = []

    def f(t, x):  # the torchdiffeq convention, and torchcfm's torch_wrapper: t.repeat(B) needs a 0-d t
        seen.append(t.shape)
        return torch.cat([x, t.repeat(x.shape[0])[:, None]], 1)[:, :2] * 0 + t

    res = sample(TimeFirst(f), torch.zeros(4, 2, dtype=torch.float64), n_steps=4)
    assert seen == [torch.Size([])] * 4 and torch.allclose(res.x, torch.full((4, 2), 0.375, dtype=torch.float64))


def test_flow_matching_model_wrapper_convention_works_as_it_is():
    # facebookresearch/flow_matching: ModelWrapper.forward(x, t, **extras); its ODESolver passes a 0-d t
    class Wrapped(torch.nn.Module):
        def forward(self, x, t, **extras):
            assert t.ndim == 0
            return native(x, t.expand(x.shape[0])) + extras["label"][:, None]

    x0, label = torch.randn(8, 2, dtype=torch.float64), torch.arange(8, dtype=torch.float64)
    ref = sample(lambda x, t, label: native(x, t) + label[:, None], x0, n_steps=10, label=label)
    out = sample(Wrapped(), x0, n_steps=10, time_shape="scalar", label=label)
    assert torch.equal(ref.x, out.x) and torch.equal(ref.kpe, out.kpe)


def test_adapters_name_the_fix_for_output_objects_and_tuples():
    class Output:
        sample = None

    for model, match in [(lambda x, s: (x,), r"\[0\]"), (lambda x, s: Output(), r"\.sample")]:
        try:
            ReversedTime(model)(torch.zeros(2, 2), torch.zeros(2))
        except TypeError as err:
            assert "ReversedTime" in str(err)
            import re
            assert re.search(match, str(err))
        else:
            raise AssertionError("no error")
