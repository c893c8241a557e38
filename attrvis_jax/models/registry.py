"""Model registry: name -> architecture, and `load_model`.

Each architecture module defines `ARCH`, an `Architecture`. Modules are imported lazily so that
listing models costs nothing.
"""

from __future__ import annotations

import dataclasses
import importlib
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from attrvis_jax import labels as labels_mod
from attrvis_jax.errors import AttrvisError, WeightsError, unknown
from attrvis_jax.models.base import Architecture, Model  # noqa: F401  (Architecture: re-exported)
from attrvis_jax.models.layers import check_kernels
from attrvis_jax.weights import store

MODULES = {
    "efficientnet_lite0": "attrvis_jax.models.efficientnet_lite",
    "efficientnet_lite2": "attrvis_jax.models.efficientnet_lite",
    "inception_v1": "attrvis_jax.models.inception_v1",
    "googlenet": "attrvis_jax.models.googlenet",
    "resnet50": "attrvis_jax.models.resnet",
}
DEFAULT_MODEL = "efficientnet_lite0"


def available_models() -> tuple[str, ...]:
    """The names `load_model` takes, the default (DEFAULT_MODEL) first."""
    return tuple(MODULES)


def architecture(name: str) -> Architecture:
    if name not in MODULES:
        raise unknown("model", name, MODULES, listing=True)
    module = importlib.import_module(MODULES[name])
    return module.ARCHS[name] if hasattr(module, "ARCHS") else module.ARCH


def init_variables(arch: Architecture, key: jax.Array | None = None):
    """Random variables for `arch` (tests, benchmarks), drawn with numpy from `key`.

    Kernels are He-normal (std sqrt(2 / fan_in)), biases 0, BN scale 1 / shift 0, statistics 0 mean
    and unit variance. Not Flax's `init`: on XLA:CPU that compiles one random op per weight shape,
    far slower than numpy (measured in benchmarks/README.md, section "Models: parameters, compile,
    forward").
    """
    key = jax.random.PRNGKey(0) if key is None else key
    seed = np.asarray(jax.random.key_data(key) if jnp.issubdtype(key.dtype, jax.dtypes.prng_key) else key)
    rng = np.random.default_rng(seed.astype(np.uint32).tolist())

    def draw(path, leaf):
        name = path[-1].key
        if name == "kernel":
            fan_in = int(np.prod(leaf.shape[:-1]))
            return (rng.standard_normal(leaf.shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        if name in ("scale", "var"):
            return np.ones(leaf.shape, np.float32)
        return np.zeros(leaf.shape, np.float32)

    return jax.tree_util.tree_map_with_path(draw, variables_template(arch))


def variables_template(arch: Architecture):
    """Shapes of `arch`'s variables, without allocating or computing anything."""
    net = arch.build()
    size = arch.spec.preprocess.size
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    return jax.eval_shape(net.init, jax.random.PRNGKey(0), x)


def load_model(
    name: str = DEFAULT_MODEL,  # or "package.module:function" / "file.py:function": see from_factory
    weights: str | Path | None = "default",
    *,
    labels: str | Path | None = None,
    key: jax.Array | None = None,
    kernels: str = "auto",
) -> Model:
    """Load a model by name.

    weights: "default" (the manifest's source: bundled in a registry package, or downloaded once and
    cached with its checksum verified), a path to a `.pth` file or a converted `.npz`, or None /
    "random" for random initialization (tests, benchmarks).
    labels: a class-name file (one per line) overriding the model's own list.
    kernels: which of the XLA:CPU rewrites (canonical convolution gradient, depthwise convolution
    as shifted sums, max pool as strided taps) the network uses: "auto" (those that win on the
    backend it is traced for: all on CPU, none elsewhere), "lax" (none: the plain ops), "all", or
    names joined by "+" (see `layers.rewrites`). Same values either way. The choice is a field of
    `model.net`, so anything compiled or cached per network keeps the variants apart;
    `model.net.clone(kernels="lax")` gives another variant of a loaded network.
    """
    if isinstance(name, str) and ":" in name and name not in MODULES:
        if kernels != "auto":
            raise AttrvisError(f"model factory {name!r} builds its own network; "
                               f"kernels={kernels!r} applies to the package's architectures")
        return from_factory(name, weights=weights, labels=labels)
    arch = architecture(name)
    try:
        check_kernels(kernels)
    except ValueError as e:
        raise AttrvisError(str(e)) from None
    names = None
    if labels is not None:  # before the weights: a wrong file fails fast
        names = labels_mod.read_label_file(Path(labels), arch.spec.num_classes, arch.spec.num_names, name)
    if weights is None or weights == "random":
        variables = init_variables(arch, key)
        source, weights_path = "random", None
    else:
        variables, weights_path = store.load_variables(variables_template(arch), arch.torch_rename, name, weights)
        source = str(weights) if weights != "default" else f"default ({weights_path.name})"
    if names is None:
        names = arch.labels(weights_path)
    if len(names) > arch.spec.num_classes:
        raise WeightsError(f"{name}: {len(names)} class names for {arch.spec.num_classes} logits")
    net = arch.build(kernels=kernels)
    return Model(spec=arch.spec, net=net, variables=variables, labels=names, weights_source=source)


def from_factory(spec: str, *, weights="default", labels=None) -> Model:
    """The model a user's factory returns: "package.module:function" (imported) or
    "path/to/file.py:function" (loaded from the file); the function takes no arguments and returns
    a `Model` (e.g. `from_flax(...)`). This is how a sweep spec or `--model` names a user's network.
    labels: a class-name file overriding the model's names, as for named models."""
    import importlib.util

    target, _, function = spec.rpartition(":")
    if not target or not function.isidentifier():
        raise AttrvisError(f"model factory {spec!r}: expected 'package.module:function' or 'file.py:function'")
    if weights not in (None, "default"):
        raise AttrvisError(f"model factory {spec!r} brings its own variables; weights={weights!r} does not apply")
    try:
        if target.endswith(".py"):
            path = Path(target).expanduser()
            if not path.is_file():
                raise AttrvisError(f"model factory file not found: {path}")
            name = f"attrvis_factory_{path.stem}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(module_spec)
            # Registered before it runs, as `import` does: dataclasses (every Flax module) look
            # their defining module up in sys.modules while the class is being made.
            sys.modules[name] = module
            try:
                module_spec.loader.exec_module(module)
            except BaseException:
                sys.modules.pop(name, None)
                raise
        else:
            module = importlib.import_module(target)
    except AttrvisError:
        raise
    except Exception as e:  # noqa: BLE001  (the user's code failed to import: one line that says where)
        raise AttrvisError(f"model factory {spec!r}: importing {target} failed: {type(e).__name__}: {e}") from e
    factory = getattr(module, function, None)
    if not callable(factory):
        raise AttrvisError(f"model factory {spec!r}: {target} has no function {function!r}")
    model = factory()
    if not isinstance(model, Model):
        raise AttrvisError(f"model factory {spec!r} returned {type(model).__name__}, not an attrvis_jax Model "
                           "(wrap your network with from_flax or from_nnx)")
    if labels is not None:
        names = labels_mod.read_label_file(Path(labels), model.spec.num_classes, model.spec.num_names, spec)
        model = dataclasses.replace(model, labels=tuple(names))
    return model
