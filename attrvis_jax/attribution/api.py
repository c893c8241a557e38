"""`attribute`: one call from an image to post-processed neuron attributions at a hidden layer."""

from __future__ import annotations

import functools
import warnings
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from attrvis_jax.attribution.methods import ALIASES, METHODS, MethodOutput
from attrvis_jax.attribution.postprocess import postprocess_batch
from attrvis_jax.attribution.result import Attribution
from attrvis_jax.config import AttributionConfig
from attrvis_jax.data import is_array, network_inputs
from attrvis_jax.errors import AttrvisError, unknown
from attrvis_jax.pictures import to_uint8
from attrvis_jax.prng import as_key


def resolve_method(method: str) -> str:
    name = method.lower().replace("-", "_")
    name = ALIASES.get(name, name)
    if name not in METHODS:
        raise unknown("attribution method", method, METHODS, listing=True)
    return name


TOP_CLASS = "top1"  # a target spec: the image's top class


def resolve_targets(model, x, target, variables=None) -> np.ndarray:
    """Class indices (N,) for images x (N, H, W, 3): `target` is one spec for every image or one per
    image; a spec is a class index, a class name (or synonym, or WordNet id), or None / "top1" for
    the image's top class (the only case that runs the network). The one target rule of the
    library, the CLI, sweeps and figures."""
    n = len(x)
    one = target is None or isinstance(target, str) or np.ndim(target) == 0  # one spec (class_index checks its type)
    specs = [target] * n if one else list(np.asarray(target).tolist() if is_array(target) else target)
    if len(specs) != n:
        raise AttrvisError(f"{len(specs)} targets for {n} images")
    top = [spec is None or spec == TOP_CLASS for spec in specs]
    if any(top):
        variables = model.variables if variables is None else variables
        logits = np.asarray(_logits(model.net, variables, jnp.asarray(x)))[:, : len(model.labels)]
    return np.array([int(np.argmax(logits[i])) if top[i]
                     else model.class_index(spec)
                     for i, spec in enumerate(specs)], np.int32)


def attribute(
    model,
    image,
    layer: str,
    target: int | str | Sequence[int | str] | None = None,
    method: str = "aumann_shapley",
    *,
    config: AttributionConfig | None = None,
    key: jax.Array | None = None,
    variables=None,
    progress: Callable[[int, int], None] | None = None,
    progress_every: int = 256,
    **overrides,
) -> Attribution | list[Attribution]:
    """Neuron attributions of `layer` for class `target`, post-processed (channel filter, R⁺, heat
    map, β, λ0).

    image: one image or a batch (an array (N, H, W, C) or a list): a float array (size, size, 3) in
        [0, 1] is used as it is, anything else (a path, PIL image, uint8/uint16 array, a float array
        in [0, 1] of another size) is preprocessed the model's way, each image of a batch as it
        would be alone (`data.network_inputs`). Floats outside [0, 1] are an error.
    target: class index or name (one, or one per image); None: each image's top class.
    method: aumann_shapley (default), integrated_gradients, saliency, grad_x_activation, smoothgrad,
        grad_cam, deeplift_rescale (aliases: as, ig, gradxinput, gradcam, deeplift).
    config / overrides: an `AttributionConfig`, and/or its fields by name (`steps=100`).
    key: PRNG key for the baseline's mask inits and SmoothGrad's noise (default: key 0).
    variables: the model's variables (default `model.variables`).
    progress: called as progress(done, total) while the baseline and the path run.

    Returns one `Attribution` for one image, a list for a batch.
    """
    config = config or AttributionConfig()
    if overrides:
        config = config.replace(**overrides)
    method = resolve_method(method)
    layer = model.resolve_layer(layer)
    if layer == "logits":
        raise AttrvisError("attributions need a hidden layer, not the logits; valid: " + ", ".join(model.layers))
    x, single = network_inputs(image, model.spec.preprocess)
    variables = model.variables if variables is None else variables
    key = as_key(key, batched=None)

    acts = _features(model.net, variables, jnp.asarray(x), layer)
    targets = resolve_targets(model, x, target, variables)
    out: MethodOutput = METHODS[method](
        model.net, layer, variables, acts, jnp.asarray(targets),
        config=config, key=key, progress=progress, progress_every=progress_every,
    )
    values = np.asarray(out.values)
    if not np.all(np.isfinite(values)):
        raise AttrvisError(f"{method} produced non-finite attributions at {layer} (NaN or inf in the model's output?)")
    for i in range(len(values)):
        if not np.any(values[i]):
            raise AttrvisError(
                f"the {method} attribution of image {i} at {layer} is all zero: the logit of class {targets[i]} "
                f"({model.class_name(int(targets[i]))!r}) does "
                "not change with this layer's activations (or the baseline equals them); nothing to visualize"
            )
    post = jax.tree_util.tree_map(np.asarray, postprocess_batch(jnp.asarray(values), config, model.input_size))
    results = []
    for i in range(len(values)):
        if not np.any(post.positive[i]):
            warnings.warn(f"image {i}: no positive attribution survives the channel filter at {layer}; "
                          "R+ is all zero (lambda0 = 0)", stacklevel=2)
        results.append(Attribution(
            values=values[i],
            positive=post.positive[i],
            heatmap=post.heatmap[i],
            beta=float(post.beta[i]),
            lambda0=float(post.lambda0[i]),
            logit=float(out.logit[i]),
            model=model.name,
            layer=layer,
            target=int(targets[i]),
            target_name=model.class_name(int(targets[i])),
            method=method,
            config=config,
            input_size=model.input_size,
            baseline=None if out.baseline is None else np.asarray(out.baseline[i]),
            logit_baseline=None if out.logit_baseline is None else float(out.logit_baseline[i]),
            completeness_error=None if out.completeness_error is None else float(out.completeness_error[i]),
            activations=np.asarray(acts[i]),
            image=to_uint8(x[i]),  # for display: a quarter of the float copy's memory
        ))
    return results[0] if single else results


@functools.partial(jax.jit, static_argnums=(0, 3))
def _features(net, variables, x, layer):
    return net.apply(variables, x, stop=layer)


@functools.partial(jax.jit, static_argnums=0)
def _logits(net, variables, x):
    return net.apply(variables, x)
