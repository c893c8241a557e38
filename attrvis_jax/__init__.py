"""attrvis_jax: attribution visualization (Shi, Li, Yamaguchi, Neurocomputing 2023) in JAX/Flax.

    import attrvis_jax as av
    model = av.load_model("efficientnet_lite0")          # real ImageNet weights, offline
    x = model.load_image("cat.jpg")                        # (224, 224, 3) in [0, 1]
    acts = model.features(x, "blocks.10")                  # nothing past the layer is computed
    logits = model.head(acts, "blocks.10")
"""

from attrvis_jax.attribution import Attribution, attribute
from attrvis_jax.config import AttributionConfig, RenderConfig
from attrvis_jax.data import load_image, read_image, sample_image
from attrvis_jax.errors import AttrvisError, ImageError, UnknownNameError, WeightsError
from attrvis_jax.models import Model, ModelSpec, Preprocess, available_models, load_model
from attrvis_jax.render import RenderResult, visualize

__version__ = "0.1.0"

__all__ = [
    "Attribution",
    "AttributionConfig",
    "AttrvisError",
    "ImageError",
    "Model",
    "ModelSpec",
    "Preprocess",
    "RenderConfig",
    "RenderResult",
    "UnknownNameError",
    "WeightsError",
    "attribute",
    "available_models",
    "load_image",
    "load_model",
    "read_image",
    "sample_image",
    "visualize",
]
