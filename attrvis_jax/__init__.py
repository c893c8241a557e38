"""attrvis_jax: attribution visualization (Shi, Li, Yamaguchi, Neurocomputing 2023) in JAX/Flax.

    import attrvis_jax as av
    model = av.load_model("efficientnet_lite0")          # real ImageNet weights, offline
    x = model.load_image("cat.jpg")                        # (224, 224, 3) in [0, 1]
    acts = model.features(x, "blocks.10")                  # nothing past the layer is computed
    logits = model.head(acts, "blocks.10")

    mine = av.from_flax(MyCNN(), variables, input_size=224)  # any linen (or from_nnx: NNX) network
"""

from attrvis_jax.attribution import Attribution, attribute
from attrvis_jax.config import AttributionConfig, RenderConfig, SweepConfig
from attrvis_jax.data import load_image, read_image, sample_image
from attrvis_jax.errors import AttrvisError, ImageError, UnknownNameError, WeightsError
from attrvis_jax.groups import ChannelGroups, channel_groups, split_attribution, visualize_groups
from attrvis_jax.metrics import evaluate_rows, evaluate_visualizations
from attrvis_jax.models import Model, ModelSpec, Preprocess, available_models, from_flax, from_nnx, load_model
from attrvis_jax.render import RenderResult, visualize

__version__ = "0.1.0"

__all__ = [
    "Attribution",
    "AttributionConfig",
    "AttrvisError",
    "ChannelGroups",
    "ImageError",
    "Model",
    "ModelSpec",
    "Preprocess",
    "RenderConfig",
    "RenderResult",
    "SweepConfig",
    "UnknownNameError",
    "WeightsError",
    "attribute",
    "available_models",
    "channel_groups",
    "evaluate_rows",
    "evaluate_visualizations",
    "from_flax",
    "from_nnx",
    "load_image",
    "load_model",
    "read_image",
    "sample_image",
    "split_attribution",
    "visualize",
    "visualize_groups",
]
