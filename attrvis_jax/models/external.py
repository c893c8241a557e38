"""Bring your own Flax network: `from_flax` (linen) and `from_nnx` wrap a user's module and its
variables into the same `Model` that `load_model` returns, with no re-implementation and no hooks
in the user's code.

    model = from_flax(MyCNN(), variables, input_size=224, labels=names)
    model.layers                      # the submodules whose output is one NHWC array: "block3", "Conv_7", ...
    acts = model.features(x, "block3")
    logits = model.head(acts, "block3")

Layers are submodule paths joined by "/" (linen: `"layer3/block5"`, `"Conv_7"`; NNX: attribute
names and list indices, `"blocks/2"`). A submodule returning a tuple, list or dict is a layer by
one of its outputs: `"block5:0"`, `"block5:skip"`.

How a layer is cut out of the forward pass, without touching the network's code: every call of a
submodule's `__call__` passes through one interceptor (linen's `nn.intercept_methods`; for NNX each
submodule of a merged copy is wrapped). `features` records the layer's output on the way and
returns it; `head` substitutes the given activations for it, feeding the network a zero image.
Under `jit` (as everything downstream runs) XLA's dead-code elimination then removes everything
past the layer from `features` and everything before it from `head` (the tests check the compiled
HLO). That `head` is right needs the layer to be a cut of the graph: if the logits also depend on
the image through a path around the layer (a skip connection around a submodule inside a residual
block), `head` raises an error naming the layer (checked on the traced jaxpr, once per layer).

Limits: submodules are intercepted through `__call__` only (a submodule used through another
method is not a layer); a submodule called more than once per forward pass is not a layer (its
activations are not one tensor); submodules inside lifted transforms (`nn.scan`, `nn.remat`, ...)
are not supported as layers. The network must map a batch of images (N, H, W, 3) to logits
(N, classes) when called with `call_kwargs` (e.g. `{"train": False}`), and take images in [0, 1]
after `normalize` (e.g. ImageNet mean/std) is applied.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from attrvis_jax.errors import AttrvisError, unknown
from attrvis_jax.jaxprs import used_inputs
from attrvis_jax.data import Preprocess
from attrvis_jax.models.base import Model, ModelSpec

# on_call(path, compute) -> the submodule's output: the one interception point both front ends share
OnCall = Callable[[str, Callable[[], Any]], Any]


# ---- layer names: "path" or "path:key" ------------------------------------------------------------
def split_name(layer: str) -> tuple[str, Any]:
    """"block5:0" -> ("block5", 0); "block5:skip" -> ("block5", "skip"); "Conv_3" -> ("Conv_3", None)."""
    path, sep, key = layer.partition(":")
    if not sep:
        return path, None
    return path, int(key) if key.lstrip("-").isdigit() else key


def _select(out, key):
    return out if key is None else out[key]


def _replace(out, key, value):
    """`out` with its `key` output (None: all of it) replaced by `value`."""
    if key is None:
        return value
    if isinstance(out, Mapping):
        return {**out, key: value}
    items = list(out)
    items[key] = value
    if hasattr(out, "_fields"):  # a namedtuple
        return type(out)(*items)
    return tuple(items) if isinstance(out, tuple) else items


def _outputs(path: str, out) -> list[tuple[str, Any]]:
    """The (layer name, array) pairs of one submodule output."""
    if hasattr(out, "shape"):  # an array (or its shape, during discovery)
        return [(path, out)]
    if isinstance(out, Mapping):
        return [(f"{path}:{k}", v) for k, v in out.items() if hasattr(v, "shape")]
    if isinstance(out, (tuple, list)):
        return [(f"{path}:{i}", v) for i, v in enumerate(out) if hasattr(v, "shape")]
    return []


# ---- the net: StagedNet's apply protocol on top of an interceptor ------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class ExternalNet:
    """A user's network behind the protocol the package's code calls on `Model.net`:
    `apply(variables, x, start=None, stop=None, collect=())` (as `StagedNet.__call__`)."""

    run: Callable[[Any, jax.Array, OnCall], jax.Array]  # (variables, network input, on_call) -> logits
    normalize: Callable[[jax.Array], jax.Array]
    input_size: int
    params_of: Callable[[Any], Any] = lambda variables: variables.get("params", variables)  # for num_params

    def apply(self, variables, x, start: str | None = None, stop: str | None = None, collect: Sequence[str] = ()):
        wanted = [l for l in dict.fromkeys((*collect, *([stop] if stop else []))) if l != "logits"]
        captured: dict[str, Any] = {}
        if start == "logits":
            out = x
        else:
            acts = None
            if start is not None:
                acts = x
                self._check_cut(variables, start, jax.ShapeDtypeStruct(acts.shape, acts.dtype))
                x = jnp.zeros((acts.shape[0], self.input_size, self.input_size, 3), acts.dtype)
            else:
                x = self.normalize(x)
            out = self.run(variables, x, self._on_call(start, acts, wanted, captured))
        if collect:
            if "logits" in collect or stop is None or stop == "logits":
                captured["logits"] = out
            result = out if stop in (None, "logits") else captured[stop]
            return result, {k: captured[k] for k in collect}
        return out if stop in (None, "logits") else captured[stop]

    @staticmethod
    def _on_call(start, acts, wanted, captured) -> OnCall:
        start_path, start_key = split_name(start) if start else (None, None)
        by_path: dict[str, list] = {}
        for layer in wanted:
            path, key = split_name(layer)
            by_path.setdefault(path, []).append((layer, key))

        def on_call(path: str, compute):
            if path == start_path:
                out = acts if start_key is None else _replace(compute(), start_key, acts)
            else:
                out = compute()
            for layer, key in by_path.get(path, ()):
                captured[layer] = _select(out, key)
            return out

        return on_call

    def _check_cut(self, variables, layer: str, acts) -> None:
        """Refuse `layer` as head's start if the logits also read the image (once per layer and shape)."""
        shape, dtype = tuple(acts.shape), acts.dtype
        key = (layer, shape, str(dtype))
        if key in self._cuts:
            return
        abstract = jax.tree_util.tree_map(lambda v: jax.ShapeDtypeStruct(np.shape(v), jnp.result_type(v)), variables)
        size = self.input_size

        def with_image(v, x, a):
            return self.run(v, x, self._on_call(layer, a, [], {}))

        x = jax.ShapeDtypeStruct((shape[0], size, size, 3), dtype)
        closed = jax.make_jaxpr(with_image)(abstract, x, jax.ShapeDtypeStruct(shape, dtype))
        n_vars = len(jax.tree_util.tree_leaves(abstract))
        if used_inputs(closed.jaxpr)[n_vars]:
            raise AttrvisError(
                f"layer {layer!r} is not a cut of the network: the logits also depend on the image through a "
                f"path around it (e.g. a skip connection around a submodule inside a residual block), so "
                f"head() cannot start there; use the enclosing block's output")
        self._cuts.add(key)

    @functools.cached_property
    def _cuts(self) -> set:
        return set()


# ---- discovery: which submodules run, in which order, with what output -------------------------------
@dataclasses.dataclass(frozen=True)
class ExternalSpec(ModelSpec):
    """A ModelSpec whose layers were found by tracing; `problems` explain names that are not layers."""

    problems: tuple[tuple[str, str], ...] = ()

    def resolve_layer(self, layer: str) -> str:
        problems = dict(self.problems)
        if layer in problems:
            raise AttrvisError(f"{self.name}: {problems[layer]}")
        try:
            return super().resolve_layer(layer)
        except AttrvisError:
            raise unknown(f"layer of {self.name}", layer, list(self.layers) + list(problems)) from None


def discover(net: ExternalNet, variables) -> tuple[tuple[str, ...], int, tuple[tuple[str, str], ...]]:
    """(layers in forward order, number of classes, problems) from one abstract forward pass."""
    calls: list[tuple[str, Any]] = []

    def record(path, compute):
        out = compute()
        calls.append((path, jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), out)))
        return out

    size = net.input_size
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    try:
        logits = jax.eval_shape(lambda v, x: net.run(v, net.normalize(x), record), variables, x)
    except AttrvisError:
        raise
    except Exception as e:  # noqa: BLE001  (the user's module failed on a batch of images: say so in one line)
        raise AttrvisError(f"the network failed on a (1, {size}, {size}, 3) image batch: "
                           f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from e
    if not hasattr(logits, "shape") or len(logits.shape) != 2:
        raise AttrvisError(f"the network must return logits of shape (N, classes); got "
                           f"{jax.tree_util.tree_map(lambda a: a.shape, logits)}")
    counts: dict[str, int] = {}
    for path, _ in calls:
        counts[path] = counts.get(path, 0) + 1
    layers, problems, seen = [], {}, set()
    for path, out in calls:
        if path in seen:
            continue
        seen.add(path)
        if counts[path] > 1:
            problems[path] = f"submodule {path!r} runs {counts[path]} times in one forward pass, so its " \
                             f"activations are not one tensor; choose a submodule that runs once"
            continue
        parts = _outputs(path, out)
        if not parts:
            problems[path] = f"submodule {path!r} returns no array"
            continue
        if parts[0][0] != path:  # several outputs: name one
            problems[path] = (f"submodule {path!r} returns a {type(out).__name__} of {len(parts)} outputs; "
                              f"name one: {', '.join(name for name, _ in parts)}")
        for name, a in parts:
            if len(a.shape) == 4:
                layers.append(name)
            else:
                problems[name] = (f"layer {name!r} has shape {tuple(a.shape)}; attribution visualization needs "
                                  f"an image-like (N, H, W, C) tensor")
    return tuple(layers), int(logits.shape[1]), tuple(problems.items())


# ---- the two front ends -----------------------------------------------------------------------------
def _linen_runner(module, call_kwargs: Mapping[str, Any]):
    import flax.linen as nn

    def run(variables, x, on_call: OnCall):
        def interceptor(next_fun, args, kwargs, context):
            path = "/".join(str(p) for p in context.module.path)
            if context.method_name != "__call__" or not path:
                return next_fun(*args, **kwargs)
            return on_call(path, lambda: next_fun(*args, **kwargs))

        with nn.intercept_methods(interceptor):
            return module.apply(variables, x, **call_kwargs)

    return run


class _Hook:
    """Stands in for one submodule of a merged NNX copy; routes its calls through on_call."""

    def __init__(self, module, path: str, on_call: OnCall):
        self.module, self.path, self.on_call = module, path, on_call

    def __call__(self, *args, **kwargs):
        return self.on_call(self.path, lambda: self.module(*args, **kwargs))

    def __getattr__(self, name):  # attribute reads of the wrapped submodule keep working
        return getattr(self.module, name)

    def __iter__(self):  # a callable container (nnx.Sequential) stays iterable and indexable
        return iter(self.module)

    def __getitem__(self, key):
        return self.module[key]

    def __len__(self):
        return len(self.module)


def _nnx_runner(graphdef, call_kwargs: Mapping[str, Any]):
    from flax import nnx

    def run(state, x, on_call: OnCall):
        model = nnx.merge(graphdef, state)  # a fresh copy per trace: hooking it leaves the user's model alone
        # callable submodules only: containers (nnx.List, nnx.Dict) are not layers and must stay iterable
        paths = [p for p, node in nnx.iter_graph(model) if p and isinstance(node, nnx.Module) and callable(node)]
        for path in sorted(paths, key=len, reverse=True):  # deepest first: parents are still plain modules
            parent = model
            for part in path[:-1]:
                parent = parent[part] if isinstance(part, int) else getattr(parent, part)
            name = "/".join(str(p) for p in path)
            child = parent[path[-1]] if isinstance(path[-1], int) else getattr(parent, path[-1])
            hook = _Hook(child, name, on_call)
            if isinstance(path[-1], int) or not isinstance(parent, nnx.Module):
                parent[path[-1]] = hook
            else:
                object.__setattr__(parent, path[-1], hook)
        return model(x, **call_kwargs)

    return run


def _spec_and_labels(name, net, variables, input_size, preprocess, labels, description):
    layers, num_classes, problems = discover(net, variables)
    if not layers:
        raise AttrvisError(f"{name}: no submodule returns an (N, H, W, C) array; nothing to visualize")
    if preprocess is None:
        preprocess = Preprocess(size=input_size, mode="resize_crop", resize=round(input_size * 256 / 224))
    elif not isinstance(preprocess, Preprocess):
        from attrvis_jax.data import CustomPreprocess

        preprocess = CustomPreprocess(preprocess, input_size)
    elif preprocess.size != input_size:
        raise AttrvisError(f"preprocess size {preprocess.size} differs from input_size {input_size}")
    names = tuple(str(i) for i in range(num_classes)) if labels is None else tuple(str(l) for l in labels)
    if len(names) != num_classes:
        raise AttrvisError(f"{name}: {len(names)} labels for {num_classes} logits")
    spec = ExternalSpec(name=name, layers=layers, num_classes=num_classes, preprocess=preprocess,
                        description=description, problems=problems)
    return spec, names


def _wrap(name, run, variables, input_size, preprocess, labels, normalize, description, **net_fields) -> Model:
    if isinstance(input_size, bool) or not isinstance(input_size, (int, np.integer)) or input_size < 8:
        raise AttrvisError(f"input_size must be an integer >= 8, got {input_size!r}")
    net = ExternalNet(run=run, normalize=normalize or (lambda x: x), input_size=int(input_size), **net_fields)
    spec, names = _spec_and_labels(name, net, variables, int(input_size), preprocess, labels, description)
    return Model(spec=spec, net=net, variables=variables, labels=names, weights_source="user")


def from_flax(module, variables, *, input_size: int, preprocess: Preprocess | Callable | None = None,
              labels: Sequence[str] | None = None, normalize: Callable | None = None,
              call_kwargs: Mapping[str, Any] | None = None, name: str | None = None) -> Model:
    """Wrap a Flax linen module and its variables (`module.init(...)`'s dict) as a `Model`.

    input_size: the square image side the network takes (images are (N, size, size, 3) in [0, 1]).
    preprocess: how an image file becomes the input: a `Preprocess`, or a callable mapping an RGB
        float image (H, W, 3) in [0, 1] to (size, size, 3); default: resize the shorter side to
        size·256/224 and center-crop (torchvision's evaluation transform).
    labels: class names (default: the indices as strings).
    normalize: applied to images in [0, 1] before the module (e.g. ImageNet mean/std); default none.
    call_kwargs: extra arguments of `module.apply` at evaluation (e.g. `{"train": False}`).
    """
    import flax.linen as nn

    if not isinstance(module, nn.Module):
        raise AttrvisError(f"from_flax takes a flax.linen Module, got {type(module).__name__}"
                           + ("; use from_nnx for an nnx.Module" if _is_nnx(module) else ""))
    if not isinstance(variables, Mapping):
        raise AttrvisError(f"variables must be the dict module.init returns, got {type(variables).__name__}")
    run = _linen_runner(module, dict(call_kwargs or {}))
    return _wrap(name or type(module).__name__, run, variables, input_size, preprocess, labels, normalize,
                 f"user linen module {type(module).__name__}")


def from_nnx(module, *, input_size: int, preprocess: Preprocess | Callable | None = None,
             labels: Sequence[str] | None = None, normalize: Callable | None = None,
             call_kwargs: Mapping[str, Any] | None = None, name: str | None = None) -> Model:
    """Wrap an NNX module as a `Model` (its state is split off as `model.variables`; the module
    itself is never modified). Arguments as in `from_flax`."""
    from flax import nnx

    if not _is_nnx(module):
        raise AttrvisError(f"from_nnx takes an nnx.Module, got {type(module).__name__}")
    graphdef, state = nnx.split(module)
    run = _nnx_runner(graphdef, dict(call_kwargs or {}))
    return _wrap(name or type(module).__name__, run, state, input_size, preprocess, labels, normalize,
                 f"user NNX module {type(module).__name__}", params_of=lambda s: nnx.filter_state(s, nnx.Param))


def _is_nnx(module) -> bool:
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover
        return False
    return isinstance(module, nnx.Module)
