"""Neuron attributions at a hidden layer: the output-targeted baseline, Aumann–Shapley /
integrated gradients and the classic gradient methods, and the post-processing (channel filter, R⁺,
heat map, β by Otsu, λ0) that the visualization consumes (docs/method.md, 'The baseline' to
'Post-processing').

`attribute` is the entry point; the methods are also here as functions of explicit arrays. The
pieces (path rules, histograms, Otsu's threshold, upsampling) live in `baseline`, `methods` and
`postprocess`."""

from attrvis_jax.attribution.api import attribute, resolve_method, resolve_targets
from attrvis_jax.attribution.baseline import output_targeted_baseline
from attrvis_jax.attribution.methods import (
    METHODS,
    aumann_shapley,
    deeplift_rescale,
    grad_cam,
    grad_x_activation,
    integrated_gradients,
    saliency,
    smoothgrad,
)
from attrvis_jax.attribution.result import Attribution

__all__ = [
    "METHODS",
    "Attribution",
    "attribute",
    "aumann_shapley",
    "deeplift_rescale",
    "grad_cam",
    "grad_x_activation",
    "integrated_gradients",
    "output_targeted_baseline",
    "resolve_method",
    "resolve_targets",
    "saliency",
    "smoothgrad",
]
