"""Model zoo: Flax networks with named layers, `features`/`head` splits and weight import."""

from attrvis_jax.data import Preprocess
from attrvis_jax.models.base import Model, ModelSpec, StagedNet
from attrvis_jax.models.external import from_flax, from_nnx
from attrvis_jax.models.registry import DEFAULT_MODEL, architecture, available_models, load_model

__all__ = [
    "DEFAULT_MODEL",
    "Model",
    "ModelSpec",
    "Preprocess",
    "StagedNet",
    "architecture",
    "available_models",
    "from_flax",
    "from_nnx",
    "load_model",
]
