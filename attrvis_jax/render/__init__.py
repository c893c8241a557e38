"""Rendering: optimize an image and a mask so that the masked, perturbed image excites a hidden
layer in proportion to its neuron attributions (docs/method.md, 'Parameterization' to 'The loss').

    result = visualize(model, attribution, RenderConfig(perturbation="pyramid"), key=jax.random.key(0))
    result.composed      # (seeds, H, W, 3): 0.55·(1 − M) + X·M
    plain = visualize(model, objectives.channel(model, "blocks.10", 7), perturbation="none")

Modules: param (FFT RGBA image, color decorrelation), noise (fractal noise, pyramid), perturb (the
six perturbations), transforms (one fixed-shape affine resampling), loss (the loss, its schedules, Adam),
objectives (what the kernel optimizes toward: functions of a network's activations, the
attribution objective and lucid's feature objectives among them),
optimize (the kernel: compiled engine, scan loop, vmapped rows, `visualize_rows`), api (`visualize`).
"""

from attrvis_jax import _deprecated
from attrvis_jax.config import RenderConfig
from attrvis_jax.render import objectives
from attrvis_jax.render.api import RenderResult, visualize
from attrvis_jax.render.objectives import Objective, attribution_objective
from attrvis_jax.render.optimize import composite, seed_keys, visualize_rows

__all__ = ["Objective", "RenderConfig", "RenderResult", "attribution_objective", "composite",
           "objectives", "seed_keys", "visualize", "visualize_rows"]


def _kernel_tuple():
    from attrvis_jax.render.optimize import _Rows

    return _Rows


# One public result type, RenderResult; the kernel's tuple (`Rendered`, public before) is internal.
__getattr__ = _deprecated.module_getattr(__name__, {"Rendered": ("attrvis_jax.render.RenderResult (visualize's "
                                                                 "result; visualize_rows returns a plain tuple)",
                                                                 _kernel_tuple)})
