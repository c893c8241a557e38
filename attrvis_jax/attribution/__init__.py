"""Neuron attributions at a hidden layer (ALGORITHM §2–§4): the output-targeted baseline,
Aumann–Shapley / integrated gradients and the classic gradient methods, and the post-processing
(channel filter, R⁺, heat map, β by Otsu, λ0) that the visualization consumes."""

from attrvis_jax.attribution.api import attribute, resolve_method
from attrvis_jax.attribution.baseline import Baseline, output_targeted_baseline, target_logits
from attrvis_jax.attribution.methods import (
    METHODS,
    MethodOutput,
    aumann_shapley,
    deeplift_rescale,
    grad_cam,
    grad_x_activation,
    integrated_gradients,
    path_integral,
    path_rule,
    saliency,
    smoothgrad,
)
from attrvis_jax.attribution.postprocess import (
    PostProcessed,
    area_ratio,
    channel_filter,
    heatmap,
    histogram,
    lambda0,
    otsu_threshold,
    postprocess_batch,
    upsample,
)
from attrvis_jax.attribution.result import Attribution

__all__ = [
    "METHODS",
    "Attribution",
    "Baseline",
    "MethodOutput",
    "PostProcessed",
    "area_ratio",
    "attribute",
    "aumann_shapley",
    "channel_filter",
    "grad_cam",
    "grad_x_activation",
    "heatmap",
    "histogram",
    "deeplift_rescale",
    "integrated_gradients",
    "lambda0",
    "otsu_threshold",
    "output_targeted_baseline",
    "path_integral",
    "path_rule",
    "postprocess_batch",
    "resolve_method",
    "saliency",
    "smoothgrad",
    "target_logits",
    "upsample",
]
