"""Image sources for sweeps: image folders, single files, the bundled photos, tensorflow-datasets.

`resolve_sources(specs)` turns spec strings into a deterministic list of `ImageRecord`s. A record
knows its stable `id` (the key of a result store), the class *name* its source gives it (or None)
and how to `load()` its pixels; nothing is decoded before `load()` is called.

Spec grammar (one string per source; several specs are concatenated in order, duplicates removed,
the first occurrence winning):

``PATH`` (or ``file:PATH`` to force a path reading)
    An image file: one record, id ``file:<PATH as given, normalized>``, label None.
    A directory: every image file below it (``.png .jpg .jpeg .bmp .gif .tif .tiff .webp``, any
    case; hidden files and folders skipped), recursively, sorted by relative path; ids
    ``file:<DIR>/<relative path>``. If every image sits exactly one folder deep
    (``DIR/<class>/<image>``, the class-per-subfolder layout), each label is its subfolder's
    name; otherwise labels are None. ``~`` is expanded; relative paths stay relative in ids.

``sample:NAME`` or a bare ``NAME`` (chelsea, coffee, rocket, motorcycle)
    A bundled scikit-image photo, id ``sample:NAME``, label its ImageNet class from
    `attrvis_jax.data.SAMPLES` ("tabby, tabby cat", "espresso", ...). ``sample:all`` or ``samples``
    gives all of them. An existing file or folder of the same name wins over a bare sample name.

``tfds:NAME[:SPLIT][@START:STOP]``
    Examples ``START`` (inclusive) to ``STOP`` (exclusive) of a tensorflow-datasets split read
    through `tfds.data_source` (random-access ArrayRecord files; TensorFlow is not needed), e.g.
    ``tfds:imagenet2012:validation@0:100`` or ``tfds:caltech_birds2011:test@0:10``. NAME may carry
    a config and a version as tfds spells them (``NAME/CONFIG``, ``NAME:1.2.0``). SPLIT defaults to
    validation, else test, else train; either bound may be left out (``@:50``, ``@100:``); a STOP past
    the end of the split is an error. Ids are ``tfds:NAME/SPLIT/INDEX`` with INDEX counted in the
    whole split. Labels are the dataset's own class names: ``features['label'].int2str`` where the
    ClassLabel has names (WordNet ids such as ``n02123045`` for imagenet2012), else a per-example
    ``label_name`` text (caltech_birds2011, whose ClassLabel has only indices), else None; None
    also where an example is unlabelled (-1, as in imagenet2012's test split). The data
    dir is ``$ATTRVIS_TFDS_DIR``, else ``$TFDS_DATA_DIR``, else tfds' default
    (``~/tensorflow_datasets``). Nothing is downloaded: the dataset must have been prepared in the
    array_record format (``tfds build NAME --file_format=array_record``). Resolving reads the
    selected records to learn their labels but decodes no image; ``load()`` decodes one.

A spec that cannot be resolved (missing path, folder without images, unknown prefix or sample,
bad slice, unknown or unprepared dataset) raises one `AttrvisError` whose message says what to do.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path, PurePath
from typing import Any, Callable, Sequence

import numpy as np

from attrvis_jax import data
from attrvis_jax.errors import AttrvisError, ImageError, closest, unknown

__all__ = ["IMAGE_EXTENSIONS", "ImageRecord", "resolve_sources"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
PREFIXES = ("file:", "sample:", "tfds:")
_SPLIT_PREFERENCE = ("validation", "test", "train")


@dataclasses.dataclass(frozen=True)
class ImageRecord:
    """One image of a sweep: a stable id, the class name its source knows, and a lazy loader.

    `loader` is a zero-argument callable returning anything `data.read_image` accepts (a path, an
    array, bytes, a PIL image); `load()` calls it and brings the result to uint8 RGB. Records
    compare and hash by (id, label).
    """

    id: str
    label: str | None = None
    loader: Callable[[], Any] | None = dataclasses.field(default=None, repr=False, compare=False)

    def load(self) -> np.ndarray:
        """The image as uint8 RGB (H, W, 3), read or decoded now."""
        if self.loader is None:
            raise AttrvisError(f"image record {self.id!r} has no loader")
        return _to_uint8_rgb(self.loader(), self.id)


def resolve_sources(specs: Sequence[str] | str, *, limit: int | None = None) -> list[ImageRecord]:
    """Spec strings (see the module docstring) -> records, in spec order, deduplicated, truncated.

    Duplicates (the same file reached twice, the same sample or tfds example) keep their first
    occurrence. `limit` keeps the first `limit` records after deduplication.
    """
    if isinstance(specs, (str, os.PathLike)):
        specs = [specs]
    specs = [os.fspath(s) if isinstance(s, os.PathLike) else s for s in specs]
    if not specs:
        raise AttrvisError("no image sources given: name image files, folders, sample:NAME or tfds:NAME")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise AttrvisError(f"limit must be a non-negative integer or None, got {limit!r}")

    pending: list[_Pending] = []
    seen: set[str] = set()
    for spec in specs:
        if not isinstance(spec, str):
            raise AttrvisError(f"an image source spec must be a string, got {type(spec).__name__}")
        for item in _expand(spec):
            if item.key not in seen:
                seen.add(item.key)
                pending.append(item)
    if limit is not None:
        pending = pending[:limit]
    _fill_tfds_labels(pending)
    return [item.record for item in pending]


# ----------------------------------------------------------------------------------------------
# spec dispatch


@dataclasses.dataclass
class _Pending:
    key: str  # what deduplication compares (a resolved path for files, else the id)
    record: ImageRecord
    tfds: tuple[_TfdsSplit, int] | None = None  # label still to read: (split, index)


def _expand(spec: str) -> list[_Pending]:
    text = spec.strip()
    if not text:
        raise AttrvisError("empty image source spec")
    if text.startswith("file:"):
        return _path_records(text[len("file:"):], spec)
    if text.startswith("sample:"):
        return _sample_records(text[len("sample:"):])
    if text.startswith("tfds:"):
        return _tfds_records(text[len("tfds:"):], spec)
    path = Path(text).expanduser()
    if path.exists():
        return _path_records(text, spec)
    if text in data.SAMPLES or text == "samples":
        return _sample_records("all" if text == "samples" else text)
    prefix = re.match(r"^([A-Za-z][A-Za-z0-9_+.-]+):", text)  # one letter would be a drive (C:)
    if prefix:
        near = closest(prefix.group(1) + ":", PREFIXES)
        hint = f" (closest: {near[0]!r})" if near else ""
        raise AttrvisError(
            f"unknown image source prefix {prefix.group(1) + ':'!r} in {spec!r} (and no such file)"
            f"{hint}; valid prefixes: "
            + ", ".join(PREFIXES)
            + " (or give a path)"
        )
    raise AttrvisError(
        f"image source not found: {spec!r} is not an existing file or folder" + _not_found_hint(text)
    )


def _not_found_hint(text: str) -> str:
    if "/" in text or "\\" in text or Path(text).suffix:
        return ""
    near = closest(text, list(data.SAMPLES) + ["samples"])
    return "; bundled samples: sample:" + ", sample:".join(data.SAMPLES) + (
        f" (closest: {near[0]!r})" if near else ""
    )


# ----------------------------------------------------------------------------------------------
# files and folders


def _path_records(text: str, spec: str) -> list[_Pending]:
    if not text:
        raise AttrvisError(f"no path in image source spec {spec!r}")
    given = Path(text).expanduser()
    if not given.exists():
        raise AttrvisError(f"image source not found: no file or folder {str(given)!r}")
    if given.is_dir():
        return _folder_records(given)
    if not given.is_file():
        raise AttrvisError(f"image source {str(given)!r} is neither a regular file nor a folder")
    if given.suffix.lower() not in IMAGE_EXTENSIONS:
        _check_image_header(given)
    return [_file_item(given, None)]


def _check_image_header(path: Path) -> None:
    """An explicitly named file with an unusual extension: accept it if PIL knows its header."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path):  # reads the header only, decodes nothing
            pass
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise AttrvisError(
            f"{str(path)!r} is not an image file PIL can read (image extensions: "
            + " ".join(sorted(IMAGE_EXTENSIONS))
            + ")"
        ) from None


def _file_item(path: Path, label: str | None) -> _Pending:
    shown = PurePath(os.path.normpath(path)).as_posix()
    try:
        key = "path:" + str(path.resolve())
    except OSError:
        key = "path:" + os.path.abspath(path)
    return _Pending(key=key, record=ImageRecord(f"file:{shown}", label, _FileLoader(str(path))))


def _folder_records(root: Path) -> list[_Pending]:
    found: list[tuple[str, Path]] = []
    others = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(dirpath) / name
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                found.append((path.relative_to(root).as_posix(), path))
            else:
                others += 1
    if not found:
        also = f" ({others} other files)" if others else " (it is empty)"
        raise AttrvisError(
            f"no image files in folder {str(root)!r}{also}; image extensions: "
            + " ".join(sorted(IMAGE_EXTENSIONS))
        )
    found.sort(key=lambda item: item[0])
    per_class = all(rel.count("/") == 1 for rel, _ in found)
    return [_file_item(path, rel.split("/", 1)[0] if per_class else None) for rel, path in found]


@dataclasses.dataclass(frozen=True)
class _FileLoader:
    path: str

    def __call__(self) -> str:
        return self.path


# ----------------------------------------------------------------------------------------------
# bundled photos


def _sample_records(name: str) -> list[_Pending]:
    if name != "all" and name not in data.SAMPLES:
        raise unknown("sample image", name, list(data.SAMPLES) + ["all"], listing=True)
    names = list(data.SAMPLES) if name == "all" else [name]
    out = []
    for n in names:
        record = ImageRecord(f"sample:{n}", data.SAMPLES[n][1], _SampleLoader(n))
        out.append(_Pending(key=record.id, record=record))
    return out


@dataclasses.dataclass(frozen=True)
class _SampleLoader:
    name: str

    def __call__(self) -> np.ndarray:
        return data.sample_image(self.name)


# ----------------------------------------------------------------------------------------------
# tensorflow-datasets


_VERSION = re.compile(r"^\d+\.\d+\.\d+$")


def _tfds_data_dir() -> str | None:
    return os.environ.get("ATTRVIS_TFDS_DIR") or os.environ.get("TFDS_DATA_DIR") or None


def _import_tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise AttrvisError(
            "tfds: sources need tensorflow-datasets (TensorFlow itself is not needed): "
            "pip install 'attrvis-jax[tfds]'"
        ) from None
    return tfds


def _parse_tfds(text: str, spec: str) -> tuple[str, str | None, int | None, int | None]:
    body, at, window = text.partition("@")
    parts = body.split(":")
    name = parts.pop(0)
    if not name:
        raise AttrvisError(f"no dataset name in {spec!r}; expected tfds:NAME[:SPLIT][@START:STOP]")
    if parts and _VERSION.match(parts[0]):
        name += ":" + parts.pop(0)
    split = parts.pop(0) if parts else None
    if parts or split == "":
        raise AttrvisError(f"cannot parse {spec!r}; expected tfds:NAME[:SPLIT][@START:STOP]")
    if split is not None and not re.fullmatch(r"[A-Za-z0-9_.-]+", split):
        raise AttrvisError(
            f"split {split!r} in {spec!r} must be a plain split name; select examples with "
            "@START:STOP (e.g. tfds:imagenet2012:validation@0:100), not tfds slicing syntax"
        )
    start = stop = None
    if at:
        m = re.fullmatch(r"\s*(\d*)\s*:\s*(\d*)\s*", window)
        if not m:
            raise AttrvisError(
                f"bad example range {'@' + window!r} in {spec!r}; expected @START:STOP with "
                "non-negative integers, e.g. @0:100"
            )
        start = int(m.group(1)) if m.group(1) else None
        stop = int(m.group(2)) if m.group(2) else None
        if start is not None and stop is not None and stop <= start:
            raise AttrvisError(f"empty example range @{window} in {spec!r}: STOP must exceed START")
    return name, split, start, stop


@dataclasses.dataclass
class _TfdsSplit:
    """One opened split of a dataset, shared by its records; reopened lazily after unpickling."""

    name: str
    split: str
    data_dir: str | None
    image_key: str
    label_key: str | None
    _source: Any = dataclasses.field(default=None, repr=False)

    @property
    def source(self):
        if self._source is None:
            tfds = _import_tfds()
            spec = f"tfds:{self.name}:{self.split}"
            self._source = _open_tfds(tfds, self.name, self.split, self.data_dir, spec)
        return self._source

    def example(self, index: int, keep: str | None) -> dict:
        """Example `index` with only the image feature `keep` decoded (None: no image decoded).

        The split's records are serialized tf.Examples (ArrayRecord); they are deserialized here
        rather than by `source[index]` so that other images (caltech_birds2011's segmentation
        masks) and, while labels are collected, all images stay undecoded bytes. Sources whose
        records come already decoded (tfds.testing.mock_data) are used as they are.
        """
        source = self.source
        record = source.data_source[index]
        if not isinstance(record, (bytes, bytearray, memoryview)):
            return record
        tfds = _import_tfds()
        features = source.dataset_info.features
        skip = {k: tfds.decode.SkipDecoding() for k in _image_keys(tfds, features) if k != keep}
        return features.deserialize_example_np(record, decoders=skip or None)

    def label_names(self, indices: list[int]) -> list[str | None]:
        if self.label_key is None:
            return [None] * len(indices)
        feature = self.source.dataset_info.features[self.label_key]
        out: list[str | None] = []
        for index in indices:
            value = self.example(index, keep=None)[self.label_key]
            if isinstance(value, (bytes, str)):  # a per-example name (caltech_birds2011's label_name)
                text = value.decode("utf-8") if isinstance(value, bytes) else value
                out.append(text or None)
                continue
            value = int(np.asarray(value))
            out.append(feature.int2str(value) if value >= 0 else None)  # -1: unlabelled (test splits)
        return out

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_source"] = None  # open readers do not travel; the next load() reopens them
        return state


@dataclasses.dataclass(frozen=True)
class _TfdsLoader:
    split: _TfdsSplit
    index: int

    def __call__(self) -> Any:
        try:
            return self.split.example(self.index, keep=self.split.image_key)[self.split.image_key]
        except AttrvisError:
            raise
        except Exception as e:  # a corrupt record or image surfaces here, not deep in a sweep
            raise ImageError(
                f"cannot read example {self.index} of tfds:{self.split.name}:{self.split.split}: {e}"
            ) from None


def _image_keys(tfds, features, videos: bool = True) -> list[str]:
    kinds = (tfds.features.Image, tfds.features.Video) if videos else tfds.features.Image
    return [k for k, f in features.items() if isinstance(f, kinds)]


def _open_tfds(tfds, name, split, data_dir, spec):
    """`tfds.data_source` that never downloads, with one clear line for each way it can fail."""
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except tfds.core.registered.DatasetNotFoundError:
        base = name.split("/")[0].split(":")[0]
        known = tfds.list_builders(with_community_datasets=False)
        raise unknown("tensorflow-datasets dataset", base, known) from None
    except Exception as e:
        raise _tfds_failure(tfds, name, split, data_dir, spec, e) from None


def _tfds_failure(tfds, name, split, data_dir, spec, error: Exception) -> AttrvisError:
    first = " ".join(str(error).split("\n")[0].split())
    if "unknown split" in first.lower():
        return AttrvisError(f"{spec}: {first}")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception:
        return AttrvisError(f"{spec}: tensorflow-datasets cannot open {name!r}: {first}")
    where = str(builder.data_dir)
    env = "set ATTRVIS_TFDS_DIR to the data dir where it is prepared"
    if builder.is_prepared():
        fmt = getattr(getattr(builder.info, "file_format", None), "value", None) or "another format"
        return AttrvisError(
            f"{spec}: {name!r} is prepared in {where} as {fmt}, which has no random access; "
            f"rebuild it as array_record (tfds build {name} --file_format=array_record) or {env} "
            f"({first})"
        )
    build = f"tfds build {name} --file_format=array_record" + (f" --data_dir {data_dir}" if data_dir else "")
    manual = " ".join(str(getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", "") or "").split())
    if manual:
        root = getattr(builder, "data_dir_root", None) or data_dir or Path(where).parent.parent
        manual_dir = Path(str(root)) / "downloads" / "manual"
        return AttrvisError(
            f"{spec}: {name!r} is not prepared in {where}. It needs a manual download: {manual} "
            f"Put those files in {manual_dir}, then run `{build}`; or {env}"
        )
    return AttrvisError(
        f"{spec}: {name!r} is not prepared in {where} (attrvis never downloads data); "
        f"run `{build}` where the network is reachable, or {env}"
    )


def _tfds_records(text: str, spec: str) -> list[_Pending]:
    name, split, start, stop = _parse_tfds(text, spec)
    tfds = _import_tfds()
    data_dir = _tfds_data_dir()
    if split is None:
        opened = _open_tfds(tfds, name, None, data_dir, spec)
        available = list(opened) if isinstance(opened, dict) else []
        split = next((s for s in _SPLIT_PREFERENCE if s in available), None)
        if split is None and available:
            split = sorted(available)[0]
        if split is None:
            raise AttrvisError(f"{spec}: cannot tell the splits of {name!r}; name one: tfds:{name}:SPLIT")
        source = opened[split]
    else:
        source = _open_tfds(tfds, name, split, data_dir, spec)
    features = source.dataset_info.features
    image_keys = _image_keys(tfds, features, videos=False)
    image_key = "image" if "image" in image_keys else (image_keys[0] if len(image_keys) == 1 else None)
    if image_key is None:
        raise AttrvisError(
            f"{spec}: {name!r} has no single image feature (features: {', '.join(features)})"
        )
    label_key = _label_key(tfds, features)
    size = len(source)
    lo = 0 if start is None else start
    hi = size if stop is None else stop
    if hi > size:
        raise AttrvisError(
            f"{spec}: split {split!r} of {name!r} has {size} examples; STOP {hi} is past its end"
        )
    if lo >= hi:
        raise AttrvisError(f"{spec}: selects no examples (split {split!r} of {name!r} has {size})")
    shared = _TfdsSplit(name, split, data_dir, image_key, label_key, source)
    out = []
    for index in range(lo, hi):
        record = ImageRecord(f"tfds:{name}/{split}/{index}", None, _TfdsLoader(shared, index))
        out.append(_Pending(key=record.id, record=record, tfds=(shared, index)))
    return out


def _label_key(tfds, features) -> str | None:
    """The feature that names an example's class: a ClassLabel with names, else a per-example
    text `label_name`; None where the dataset has only class indices (indices are not names)."""
    class_label = tfds.features.ClassLabel
    keys = ["label"] if "label" in features and isinstance(features["label"], class_label) else []
    keys = keys or [k for k, f in features.items() if isinstance(f, class_label)]
    if len(keys) == 1:
        feature = features[keys[0]]
        if list(feature.names) != [str(i) for i in range(feature.num_classes)]:
            return keys[0]
    if "label_name" in features and isinstance(features["label_name"], tfds.features.Text):
        return "label_name"
    return None


def _fill_tfds_labels(pending: list[_Pending]) -> None:
    """Read the labels of the tfds records that survived dedup and limit (no image decoded)."""
    groups: dict[int, tuple[_TfdsSplit, list[int]]] = {}
    for pos, item in enumerate(pending):
        if item.tfds is not None:
            groups.setdefault(id(item.tfds[0]), (item.tfds[0], []))[1].append(pos)
    for shared, positions in groups.values():
        try:
            names = shared.label_names([pending[p].tfds[1] for p in positions])
        except AttrvisError:
            raise
        except Exception as e:  # a corrupt record or an out-of-range class index
            raise AttrvisError(f"cannot read the labels of tfds:{shared.name}:{shared.split}: {e}") from None
        for pos, label in zip(positions, names):
            pending[pos].record = dataclasses.replace(pending[pos].record, label=label)


# ----------------------------------------------------------------------------------------------
# pixels


def _to_uint8_rgb(image: Any, name: str) -> np.ndarray:
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3:
        return np.ascontiguousarray(image)
    try:
        rgb = data.read_image(image)
    except ImageError as e:
        raise ImageError(f"{name}: {e}") from None
    return np.round(rgb * 255.0).astype(np.uint8)
