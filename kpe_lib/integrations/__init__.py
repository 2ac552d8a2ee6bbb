"""Bring your own model: kpe_lib's sampler, KPE and KTS on models of neighbouring libraries.

- :mod:`kpe_lib.integrations.torchcfm`: models trained with torchcfm (its ``MLP`` with ``time_varying=True``
  takes ``cat([x, t])``; ``UNetModelWrapper`` and ``torch_wrapper`` take ``(t, x)``);
- :mod:`kpe_lib.integrations.diffusers`: flow-matching pipelines of diffusers (``FlowMatchEulerDiscreteScheduler``:
  SD3, FLUX, SANA): the scheduler's shifted sigma grid as kpe_lib's time grid, the transformer as a velocity
  with classifier-free guidance, KTS applied in kpe_lib's time t = 1 - sigma;
- facebookresearch/flow_matching's ``ModelWrapper`` (``forward(x, t, **extras)``) needs no integration: pass it
  to :func:`kpe_lib.sample` as it is, with ``time_shape="scalar"`` for a 0-d ``t`` as that package's solver gives.

Neither torchcfm nor diffusers is imported by kpe_lib itself: each module imports its package only where a
function needs it (``pip install kpe-lib[integrations]``).
"""
