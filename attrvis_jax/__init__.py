"""attrvis_jax: attribution visualization (Shi, Li, Yamaguchi, Neurocomputing 2023) in JAX/Flax.

    import attrvis_jax as av
    model = av.load_model("efficientnet_lite0")          # real ImageNet weights, offline
    x = model.load_image("cat.jpg")                        # (224, 224, 3) in [0, 1]
    attr = av.attribute(model, x, "blocks.14")             # Aumann-Shapley from the targeted baseline
    vis = av.visualize(model, attr, av.RenderConfig(steps=512), seeds=4)  # RunOptions fields too
    vis.composed                                           # (4, 224, 224, 3)
    av.evaluate_visualizations(model, attr, vis)           # PCC with R⁺ and top-5 consistency, per seed
    vis.save("out", attr)                                  # the files `attrvis run` writes of a render

    plain = av.visualize(model, av.objectives.channel(model, "blocks.14", 7), perturbation="none")
    mine = av.from_flax(MyCNN(), variables, input_size=224)  # any linen (or from_nnx: NNX) network

The face is the method; everything else has its module: `attrvis_jax.errors` (the exception
classes), `attrvis_jax.config` (every config), `attrvis_jax.metrics`, `attrvis_jax.devices`
(meshes), and the drivers in `attrvis_jax.apps` (CLI, pipeline, sweeps, figures, report), which
this package never imports.
"""

from attrvis_jax.attribution import Attribution, attribute
from attrvis_jax.config import AttributionConfig, RenderConfig, RunOptions
from attrvis_jax.data import load_image, sample_image
from attrvis_jax.errors import AttrvisError
from attrvis_jax.groups import channel_groups, visualize_groups
from attrvis_jax.metrics import evaluate_visualizations
from attrvis_jax.models import Model, available_models, from_flax, from_nnx, load_model
from attrvis_jax.render import RenderResult, objectives, visualize

__version__ = "0.1.0"

__all__ = [
    "Attribution",
    "AttributionConfig",
    "AttrvisError",
    "Model",
    "RenderConfig",
    "RenderResult",
    "RunOptions",
    "attribute",
    "available_models",
    "channel_groups",
    "evaluate_visualizations",
    "from_flax",
    "from_nnx",
    "load_image",
    "load_model",
    "objectives",
    "sample_image",
    "visualize",
    "visualize_groups",
]
