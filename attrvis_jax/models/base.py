"""The model API every architecture shares.

A network is a Flax module written as an ordered chain of named *stages* (`StagedNet`). Each
stage maps the previous stage's output to its own; the stage names are the layer names users know
(lucid's `mixed4d`, torchvision's `layer3.5`, ...), and the last stage is always `"logits"`.
Because the chain is static Python, `features(x, layer)` traces only the stages up to `layer` and
`head(acts, layer)` only the stages after it: nothing past the layer is ever computed.

`Model` bundles a network with its variables, its input convention and its class names. Its
`apply_*` methods are pure functions of an explicit variables pytree (use them inside your own
`jit`/`grad`/`vmap`); `features`, `head`, `logits` are jitted conveniences that close over
`model.variables`.

Every network takes images in [0, 1], NHWC, RGB, and applies its own normalization as the first
thing it does (lucid's convention): rendering and attribution never need to know it.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from attrvis_jax.data import INPUT_SLACK, Preprocess, check_unit_range, load_image
from attrvis_jax.errors import AttrvisError, unknown
from attrvis_jax.labels import class_index

Stage = tuple[str, Callable[[jax.Array], jax.Array]]


class StagedNet(nn.Module):
    """A network as a chain of named stages; subclasses define `setup`, `stages` and `normalize`.

    The package's networks also have the field `kernels: str = "auto"`, passed to every
    convolution and max pool they build (which XLA:CPU rewrites to use: `layers.rewrites`). Being a
    field, it is part of the module's hash and equality, so jit and caches keyed on the net tell the
    variants apart.
    """

    def stages(self) -> Sequence[Stage]:
        raise NotImplementedError

    def normalize(self, x: jax.Array) -> jax.Array:
        """Map images in [0, 1] to what the first layer expects."""
        raise NotImplementedError

    def __call__(
        self,
        x: jax.Array,
        start: str | None = None,
        stop: str | None = None,
        collect: Sequence[str] = (),
    ):
        """Run the stages after `start` (None: from the image) up to and including `stop`.

        With `collect`, also returns a dict of the named stages' outputs along the way.
        """
        stages = list(self.stages())
        names = [name for name, _ in stages]
        lo = 0 if start is None else names.index(start) + 1
        hi = len(stages) if stop is None else names.index(stop) + 1
        if start is None:
            x = self.normalize(x)
        acts = {}
        for name, fn in stages[lo:hi]:
            x = fn(x)
            if name in collect:
                acts[name] = x
        return (x, acts) if collect else x


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Static facts about an architecture; hashable so it can be a jit static argument."""

    name: str
    layers: tuple[str, ...]  # public layer names, input order, without "logits"
    num_classes: int
    preprocess: Preprocess
    aliases: tuple[tuple[str, str], ...] = ()  # (alias, layer), e.g. the paper's stage names
    description: str = ""
    default_layer: str | None = None  # a mid-level layer that makes a good first visualization
    num_names: int | None = None  # lines of the model's class-name file where fewer than num_classes

    def resolve_layer(self, layer: str) -> str:
        """The canonical layer name for `layer` (an alias is mapped); clear error if unknown."""
        if layer in self.layers or layer == "logits":
            return layer
        alias = dict(self.aliases)
        if layer in alias:
            return alias[layer]
        raise unknown(f"layer of {self.name}", layer, list(self.layers) + list(alias), listing=True)


def _batched(fn):
    """Let a convenience method take one image (H, W, C) as well as a batch (N, H, W, C)."""

    @functools.wraps(fn)
    def wrapper(self, x, *args, **kwargs):
        if not isinstance(x, jax.core.Tracer):  # a concrete input: checked (traced ones are the caller's)
            if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
                raise AttrvisError(f"the network takes float images in [0, 1], got {jnp.result_type(x)}: "
                                   "read it with model.load_image")
            check_unit_range(x, "the network input", INPUT_SLACK)
        x = jnp.asarray(x)
        if x.ndim == 3:
            return jax.tree_util.tree_map(lambda y: y[0], fn(self, x[None], *args, **kwargs))
        if x.ndim != 4:
            raise AttrvisError(f"expected an image (H, W, C) or a batch (N, H, W, C), got shape {x.shape}")
        return fn(self, x, *args, **kwargs)

    return wrapper


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """A network with its variables, input convention and class names."""

    spec: ModelSpec
    net: StagedNet
    variables: Any
    labels: tuple[str, ...]
    weights_source: str = "random"

    # ---- names ---------------------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def layers(self) -> tuple[str, ...]:
        return self.spec.layers

    @property
    def input_size(self) -> int:
        return self.spec.preprocess.size

    def resolve_layer(self, layer: str | None) -> str:
        """The canonical name of `layer`; None or "default" is the model's `default_layer` (the one
        rule every driver uses when no layer is named)."""
        return self.default_layer if layer is None or layer == "default" else self.spec.resolve_layer(layer)

    @property
    def default_layer(self) -> str:
        """The layer used when none is named: the architecture's choice, else the middle layer."""
        return self.resolve_layer(self.spec.default_layer or self.layers[len(self.layers) // 2])

    def class_index(self, name: str | int) -> int:
        """Index of a class given by name (any of its comma-separated synonyms) or by index; an
        unknown name and an index out of range both raise UnknownNameError (a mistake in how a
        command was called, exit 2, wherever the name is resolved)."""
        return class_index(self.labels, name, self.spec.num_classes, model=self.name)

    def class_name(self, index: int) -> str:
        return self.labels[index]

    # ---- pure functions of explicit variables --------------------------------------------------
    def apply_features(self, variables, x: jax.Array, layer: str) -> jax.Array:
        """Activations of `layer` for images `x` (N, H, W, 3) in [0, 1]."""
        return self.net.apply(variables, x, stop=self.resolve_layer(layer))

    def apply_head(self, variables, acts: jax.Array, layer: str) -> jax.Array:
        """Logits from the activations of `layer`."""
        return self.net.apply(variables, acts, start=self.resolve_layer(layer))

    def apply_logits(self, variables, x: jax.Array) -> jax.Array:
        return self.net.apply(variables, x)

    def apply_intermediates(self, variables, x: jax.Array, layers: Sequence[str] | None = None):
        """Dict of the named layers' activations (all of them by default) and "logits"."""
        names = tuple(self.resolve_layer(l) for l in (layers or self.layers))
        stop = max(names, key=self.depth) if layers else None
        out, acts = self.net.apply(variables, x, stop=stop, collect=names)
        if stop is None:
            acts["logits"] = out
        return acts

    def depth(self, layer: str) -> int:
        """A layer's place in the network (0 for the first; "logits" after every named layer)."""
        return len(self.layers) if layer == "logits" else self.layers.index(layer)

    # ---- jitted conveniences closing over self.variables ---------------------------------------
    @functools.cached_property
    def _jit(self):
        return {
            "features": jax.jit(self.apply_features, static_argnums=2),
            "head": jax.jit(self.apply_head, static_argnums=2),
            "logits": jax.jit(self.apply_logits),
            "intermediates": jax.jit(self.apply_intermediates, static_argnums=2),
        }

    @_batched
    def features(self, x, layer: str):
        return self._jit["features"](self.variables, x, self.resolve_layer(layer))

    def head(self, acts, layer: str):
        acts = jnp.asarray(acts)
        if acts.ndim == 3:
            return self._jit["head"](self.variables, acts[None], self.resolve_layer(layer))[0]
        return self._jit["head"](self.variables, acts, self.resolve_layer(layer))

    @_batched
    def logits(self, x):
        return self._jit["logits"](self.variables, x)

    @_batched
    def intermediates(self, x, layers: Sequence[str] | None = None):
        return self._jit["intermediates"](self.variables, x, tuple(layers) if layers else None)

    def predict(self, x, top: int = 5) -> list[tuple[int, str, float]]:
        """Top classes of one image: (index, name, probability)."""
        probs = np.asarray(jax.nn.softmax(self.logits(x)[..., : len(self.labels)]))
        if probs.ndim != 1:
            raise AttrvisError("predict takes one image (H, W, 3)")
        order = np.argsort(-probs)[:top]
        return [(int(i), self.labels[i], float(probs[i])) for i in order]

    # ---- shapes and inputs ---------------------------------------------------------------------
    def layer_shapes(self, size: int | None = None) -> dict[str, tuple[int, ...]]:
        """Shape (H, W, K) of every named layer for one `size`×`size` image, without computing it
        (traced once per size: a trace of the whole network costs ~0.2 s, and every objective,
        render and catalog tile asks)."""
        size = size or self.input_size
        if size not in self._shapes:
            x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
            acts = jax.eval_shape(lambda v, x: self.apply_intermediates(v, x), self.variables, x)
            self._shapes[size] = {name: tuple(acts[name].shape[1:]) for name in (*self.layers, "logits")}
        return dict(self._shapes[size])

    @functools.cached_property
    def _shapes(self) -> dict:
        return {}

    def load_image(self, source) -> np.ndarray:
        """Read and preprocess an image (path, bytes, PIL image, array or sample name) the way this
        network wants it: (size, size, 3) float32 in [0, 1]."""
        return load_image(source, self.spec.preprocess)

    def num_params(self) -> int:
        params_of = getattr(self.net, "params_of", lambda v: v.get("params", {}))
        return int(sum(np.size(p) for p in jax.tree_util.tree_leaves(params_of(self.variables))))


@dataclasses.dataclass(frozen=True)
class Architecture:
    """What the registry needs to know about one model (each architecture module defines `ARCH`).

    torch_rename maps a torch module path ("layer3.5.conv1") to the Flax module path
    ("layer3_5/conv1"), or None for keys the Flax model does not use (aux heads);
    torch_rename_back is its inverse (tests save random Flax weights for the torch reference).
    labels(weights_path) returns the class names, given the weight file in use (InceptionV1's
    labels travel with its weights).
    build(**fields) returns the network; keyword fields override its defaults, e.g.
    `build(kernels="lax")` for the plain lax ops (see `load_model`).
    """

    spec: ModelSpec
    build: Callable[..., StagedNet]
    torch_rename: Callable[[str], "str | None"]
    torch_rename_back: Callable[[str], str]
    labels: Callable[["Path | None"], tuple[str, ...]]
