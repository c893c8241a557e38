"""Rendering (ALGORITHM §5–8): optimize an image and a mask so that the masked, perturbed image
excites a hidden layer in proportion to its neuron attributions.

    result = visualize(model, attribution, RenderConfig(perturbation="pyramid"), key=jax.random.key(0))
    result.composed      # (seeds, H, W, 3): 0.55·(1 − M) + X·M

Modules: param (FFT RGBA image, color decorrelation), noise (fractal noise, pyramid), perturb (the
six perturbations), transforms (one fixed-shape affine resampling), objective (loss, schedules),
optimize (the scan loop, vmapped seeds, chunks, `visualize`).
"""

from attrvis_jax.config import RenderConfig
from attrvis_jax.render.optimize import RenderResult, render_inputs, composite, seed_keys, visualize

__all__ = ["RenderConfig", "RenderResult", "render_inputs", "composite", "seed_keys", "visualize"]
