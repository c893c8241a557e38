"""Map a torch state dict onto a Flax variables pytree, with shape checks.

Each architecture gives a `rename(torch_module_path) -> flax_module_path | None` (flax path parts
joined by "/"; None drops the key, e.g. auxiliary classifiers). Parameter kinds follow from the
torch key's last part and rank:

    weight (4-D)         -> params/<m>/kernel      OIHW -> HWIO (depthwise O,1,H,W -> H,W,1,O)
    weight (2-D)         -> params/<m>/kernel      (out, in) -> (in, out)
    weight (1-D)         -> params/<m>/scale       batch norm gamma
    bias                 -> params/<m>/bias
    running_mean / _var  -> batch_stats/<m>/mean | var
    num_batches_tracked  -> dropped

Every target leaf must be filled exactly once and every source key used; otherwise a
`WeightsError` names the first offending key.
"""

from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import numpy as np
from flax import traverse_util

from attrvis_jax.errors import WeightsError

Rename = Callable[[str], "str | None"]


def torchvision_rename(path: str) -> str:
    """torchvision module paths -> Flax paths: `layer3.0.downsample.1` -> `layer3_0/downsample_1`."""
    return re.sub(r"\.(\d+)", r"_\1", path).replace(".", "/")


def torchvision_rename_back(path: str) -> str:
    return re.sub(r"_(\d+)", r".\1", path).replace("/", ".")


def _target(key: str, value: np.ndarray, rename: Rename) -> tuple[tuple[str, ...], np.ndarray] | None:
    module, _, leaf = key.rpartition(".")
    if leaf == "num_batches_tracked":
        return None
    flax_module = rename(module)
    if flax_module is None:
        return None
    parts = tuple(flax_module.split("/"))
    if leaf == "weight":
        if value.ndim == 4:
            return ("params", *parts, "kernel"), np.transpose(value, (2, 3, 1, 0))
        if value.ndim == 2:
            return ("params", *parts, "kernel"), value.T
        if value.ndim == 1:
            return ("params", *parts, "scale"), value
    elif leaf == "bias":
        return ("params", *parts, "bias"), value
    elif leaf == "running_mean":
        return ("batch_stats", *parts, "mean"), value
    elif leaf == "running_var":
        return ("batch_stats", *parts, "var"), value
    raise WeightsError(f"weight key {key!r}: no rule for a {value.ndim}-D {leaf!r}")


def torch_to_flax(
    state_dict: Mapping[str, np.ndarray], template: Any, rename: Rename, source: str = "weights"
) -> dict:
    """Build Flax variables shaped like `template` (a pytree of arrays or ShapeDtypeStructs)."""
    wanted = traverse_util.flatten_dict(dict(template))
    filled: dict[tuple[str, ...], np.ndarray] = {}
    for key, value in state_dict.items():
        value = np.asarray(value)
        hit = _target(key, value, rename)
        if hit is None:
            continue
        path, array = hit
        if path not in wanted:
            raise WeightsError(
                f"{source}: unexpected key {key!r} (maps to {'/'.join(path)}, which the model does not have)"
            )
        shape = tuple(wanted[path].shape)
        if array.shape != shape:
            raise WeightsError(
                f"{source}: shape mismatch at key {key!r}: file has {tuple(value.shape)}, "
                f"model expects {shape} (as {'/'.join(path)})"
            )
        if path in filled:
            raise WeightsError(f"{source}: key {key!r} fills {'/'.join(path)} a second time")
        filled[path] = np.ascontiguousarray(array, dtype=np.float32)
    missing = [p for p in wanted if p not in filled]
    if missing:
        raise WeightsError(
            f"{source}: {len(missing)} model variable(s) have no key in the file, first: {'/'.join(missing[0])}"
        )
    return traverse_util.unflatten_dict(filled)


def flax_to_torch(variables: Any, rename_back: Callable[[str], str]) -> dict[str, np.ndarray]:
    """Inverse of `torch_to_flax` (used to save random Flax weights for the torch references)."""
    out = {}
    for path, value in traverse_util.flatten_dict(dict(variables)).items():
        collection, *module, leaf = path
        prefix = rename_back("/".join(module))
        value = np.asarray(value)
        if leaf == "kernel":
            out[prefix + ".weight"] = np.transpose(value, (3, 2, 0, 1)) if value.ndim == 4 else value.T
        elif leaf == "scale":
            out[prefix + ".weight"] = value
        elif leaf == "bias":
            out[prefix + ".bias"] = value
        elif leaf in ("mean", "var"):
            out[prefix + (".running_mean" if leaf == "mean" else ".running_var")] = value
        else:
            raise ValueError(f"no torch name for {'/'.join(path)}")
    return out
