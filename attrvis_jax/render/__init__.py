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

from attrvis_jax.config import RenderConfig
from attrvis_jax.render import objectives
from attrvis_jax.render.api import RenderResult, visualize
from attrvis_jax.render.objectives import Objective, attribution_objective
from attrvis_jax.render.optimize import Rendered, composite, seed_keys, visualize_rows

__all__ = ["Objective", "RenderConfig", "RenderResult", "Rendered", "attribution_objective", "composite",
           "objectives", "seed_keys", "visualize", "visualize_rows"]
