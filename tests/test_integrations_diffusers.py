"""kpe_lib on diffusers' flow-matching scheduler with a tiny randomly initialised SD3 transformer (no download)."""
import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from kpe_lib import KTS  # noqa: E402
from kpe_lib.integrations.diffusers import (FlowMatchVelocity, flow_match_grid, sample_flow_match,  # noqa: E402
                                            sigmas_to_grid)

B, STEPS = 2, 8


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    transformer = diffusers.SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8, num_attention_heads=2,
        joint_attention_dim=16, caption_projection_dim=16, pooled_projection_dim=16, out_channels=4,
        pos_embed_max_size=8).eval()
    g = torch.Generator().manual_seed(1)
    cond = dict(encoder_hidden_states=torch.randn(B, 5, 16, generator=g), pooled_projections=torch.randn(B, 16, generator=g))
    uncond = dict(encoder_hidden_states=torch.randn(B, 5, 16, generator=g),
                  pooled_projections=torch.randn(B, 16, generator=g))
    return transformer, cond, uncond, torch.randn(B, 4, 8, 8, generator=g)


def scheduler(**config):
    return diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0, **config)


@torch.no_grad()
def scheduler_loop(transformer, sched, latents, cond, uncond=None, w=1.0, gain=None, seen=None):
    """The SD3 pipeline's denoising loop: CFG on [negative; positive], then scheduler.step (with a KTS gain, the
    step is x + eta(1 - sigma) dt out in float32, as kpe_lib's shaped Euler)."""
    sched.set_timesteps(STEPS)
    x = latents.clone()
    for i, t in enumerate(sched.timesteps):
        if uncond is not None and w != 1.0:
            both = {k: torch.cat([uncond[k], v]) for k, v in cond.items()}
            out = transformer(hidden_states=torch.cat([x, x]), timestep=t.expand(2 * B), return_dict=False, **both)[0]
            u, c = out.chunk(2)
            out = u + w * (c - u)
        else:
            out = transformer(hidden_states=x, timestep=t.expand(B), return_dict=False, **cond)[0]
        if seen is not None:
            seen.append(float(t))
        if gain is None:
            x = sched.step(out, t, x, return_dict=False)[0]
        else:
            s, s_next = float(sched.sigmas[i]), float(sched.sigmas[i + 1])
            x = x + (float(gain(1.0 - s)) * (s_next - s)) * out
    return x


@pytest.mark.parametrize("w", [1.0, 4.5])
def test_eta_one_equals_the_schedulers_own_loop(tiny, w):
    transformer, cond, uncond, latents = tiny
    expect = scheduler_loop(transformer, scheduler(), latents, cond, uncond, w)
    res = sample_flow_match(transformer, scheduler(), latents, num_inference_steps=STEPS, cond=cond, uncond=uncond,
                            guidance_scale=w, diagnostics=True)
    diff = float((res.x - expect).abs().max())
    print(f"max |kpe_lib - scheduler loop| (w = {w}): {diff:.3g}, max |x| {float(expect.abs().max()):.3g}")
    # float32 round-off only: the scheduler scales and adds in two roundings per step, the sampler in one fused
    # add, and guidance amplifies the difference by up to w; 8 ulps of the largest value bounds it
    assert diff <= 8 * torch.finfo(torch.float32).eps * float(expect.abs().max())
    assert res.nfe == STEPS and res.kpe.shape == (B,) and res.energy.shape == (STEPS, B)
    share = res.diagnostics.guidance_share
    assert (float(share.max()) == 0.0) if w == 1.0 else bool((share > 0).all())
    assert bool((res.diagnostics.straightness >= 1 - 1e-9).all())


def test_kts_gain_is_applied_in_the_mirrored_time(tiny):
    transformer, cond, _, latents = tiny
    gain = KTS(alpha0=0.2, beta0=0.03)
    expect = scheduler_loop(transformer, scheduler(), latents, cond, gain=gain)
    res = sample_flow_match(transformer, scheduler(), latents, num_inference_steps=STEPS, cond=cond, gain=gain)
    plain = sample_flow_match(transformer, scheduler(), latents, num_inference_steps=STEPS, cond=cond)
    assert float((res.x - expect).abs().max()) <= 1e-5
    assert float((res.x - plain.x).abs().max()) > 1e-2  # the gain changes the path
    assert bool((res.kpe != res.kpe_raw).all())


def test_the_transformer_sees_the_schedulers_timesteps(tiny):
    transformer, cond, _, latents = tiny
    seen, used = [], []
    scheduler_loop(transformer, scheduler(), latents, cond, seen=seen)
    hook = transformer.register_forward_pre_hook(lambda m, a, k: used.append(float(k["timestep"][0])), with_kwargs=True)
    try:
        sample_flow_match(transformer, scheduler(), latents, num_inference_steps=STEPS, cond=cond)
    finally:
        hook.remove()
    assert used == seen and seen[0] == 1000.0 and seen[-1] < 1000.0 / STEPS  # sigma x 1000, shifted


def test_grid_from_the_schedulers_shifted_sigmas():
    sched = scheduler()
    grid = flow_match_grid(sched, 10)
    assert grid.dtype == torch.float64 and grid.shape == (11,) and float(grid[0]) == 0.0 and float(grid[-1]) == 1.0
    assert torch.allclose(grid, 1 - sched.sigmas.double(), atol=1e-7)
    steps = grid[1:] - grid[:-1]
    unshifted = flow_match_grid(diffusers.FlowMatchEulerDiscreteScheduler(shift=1.0), 10)
    assert float(steps[0]) < float((unshifted[1:] - unshifted[:-1])[0]) / 2  # shift 3: finer steps near the noise
    with pytest.raises(ValueError, match=r"scheduler\.timesteps.*scheduler\.sigmas"):
        sigmas_to_grid(sched.timesteps)
    with pytest.raises(ValueError, match="terminal 0 is missing"):
        sigmas_to_grid(sched.sigmas[:-1])
    with pytest.raises(ValueError, match="pass the sigmas unflipped"):
        sigmas_to_grid(sched.sigmas.flip(0))


def test_half_precision_latents_keep_a_float32_state(tiny):
    transformer, cond, _, latents = tiny
    exact = scheduler_loop(transformer, scheduler(), latents, cond)
    half_model = diffusers.SD3Transformer2DModel.from_config(transformer.config).eval()
    half_model.load_state_dict(transformer.state_dict())
    half_model = half_model.to(torch.bfloat16)
    bf16 = {k: v.bfloat16() for k, v in cond.items()}
    theirs = scheduler_loop(half_model, scheduler(), latents.bfloat16(), bf16)
    ours = sample_flow_match(half_model, scheduler(), latents.bfloat16(), num_inference_steps=STEPS, cond=bf16)
    assert ours.x.dtype == torch.float32
    err_ours, err_theirs = (float((r.float() - exact).abs().mean()) for r in (ours.x, theirs))
    print(f"bf16 mean error vs float32: kpe_lib {err_ours:.4g}, scheduler loop {err_theirs:.4g}")
    assert err_ours < err_theirs


def test_velocity_checks_its_keywords_and_outputs(tiny):
    transformer, cond, uncond, latents = tiny
    with pytest.raises(ValueError, match="uncond must have the keywords of cond"):
        FlowMatchVelocity(transformer, cond, {"encoder_hidden_states": uncond["encoder_hidden_states"]}, 2.0)
    v = FlowMatchVelocity(transformer, cond)
    out = v(latents, torch.tensor(0.25))
    direct = transformer(hidden_states=latents, timestep=torch.full((B,), 750.0), **cond).sample
    assert torch.allclose(out, -direct, atol=1e-6)  # v = -prediction at sigma = 1 - t
