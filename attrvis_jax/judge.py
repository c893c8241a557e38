"""A second network's verdict on pictures (docs/method.md, 'Metrics').

The paper's classification consistency asks the network a picture was optimized against whether it
still sees the class; that network is the one least able to be fooled by it. A *judge* is another
network (any `load_model` name, or the same one) that classifies each picture through its own
preprocessing and ranks the same class:

    judge = load_model("efficientnet_lite2")
    check_judge(model, judge)                        # the same class at the same index, or an error
    verdict = judge_pictures(judge, vis.composed, attr.target, photo="cat.jpg", gray=config.background)
    verdict.rank, verdict.top5                       # per picture; 0 = the judge's top class
    verdict.photo_rank, verdict.gray_rank            # the photo itself and a plain gray canvas, for scale

The forward pass and the ranks (`judge_ranks`) are one jitted, batched, pure function of the judge's
variables; only the preprocessing (the judge's resize and crop, `data.network_inputs`) runs on the
host, as it does for every input.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from attrvis_jax.config import CODE_GRAY
from attrvis_jax.data import network_input, network_inputs
from attrvis_jax.devices import fixed_batches
from attrvis_jax.errors import AttrvisError
from attrvis_jax.ranks import target_rank
from attrvis_jax.pictures import to_uint8

BATCH = 8  # pictures per compiled forward pass: one compile per judge, whatever the count


def named_classes(model) -> tuple[str, ...]:
    """The model's class names without the padding of unnamed logits (InceptionV1's 1008 logits)."""
    names = tuple(model.labels)
    end = len(names)
    while end and names[end - 1] == f"unnamed_{end - 1}":
        end -= 1
    return names[:end]


def check_judge(model, judge) -> None:
    """Refuse a judge whose classes are not the model's, index for index (a class is compared by its
    index: another label list, a network of 10 classes, InceptionV1's own order, would rank
    another class). The same network may judge itself (`same_model`)."""
    mine, theirs = named_classes(model), named_classes(judge)
    if mine == theirs:
        return
    if len(mine) != len(theirs):
        why = f"{len(theirs)} classes, {model.name} has {len(mine)}"
    else:
        i = next(i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b)
        why = f"class {i} is {theirs[i]!r} there, {mine[i]!r} in {model.name}"
    raise AttrvisError(f"the judge {judge.name} has other classes than {model.name} ({why}): a judge must "
                       "give every class the same index")


def same_model(model, judge) -> bool:
    """Whether the judge is the network itself (the same architecture and the same weights)."""
    return judge is model or (judge.name == model.name and judge.weights_source == model.weights_source)


def _ranks(judge, variables, images, targets):
    logits = judge.apply_logits(variables, images)[:, : len(named_classes(judge))]
    return target_rank(logits, targets), jnp.argmax(logits, axis=-1)


_ranks_jit = jax.jit(_ranks, static_argnums=0)


def judge_ranks(judge, images, targets, *, variables=None) -> tuple[np.ndarray, np.ndarray]:
    """(rank of each row's target class, the judge's top class) for images (N, size, size, 3) in
    [0, 1] already at the judge's input size; targets (N,) or one int. Runs in fixed batches of
    `BATCH` (zero-padded), so any count compiles once."""
    images = np.asarray(images, np.float32)
    targets = np.broadcast_to(np.asarray(targets, np.int32), (len(images),))
    variables = judge.variables if variables is None else variables
    ranks, tops = fixed_batches(lambda x, t: _ranks_jit(judge, variables, x, t), images, targets, width=BATCH)
    return ranks.astype(np.int64), tops.astype(np.int64)


def as_saved(pictures) -> np.ndarray:
    """Pictures (..., H, W, 3) in [0, 1] as their PNG holds them: 8 bits a channel, back in [0, 1].
    The judge sees this, so a verdict taken now and one taken later from the saved file agree."""
    arr = np.asarray(pictures)  # uint8 (read from a PNG) passes through to_uint8 unchanged
    return to_uint8(arr.reshape(-1, *arr.shape[-3:])).reshape(arr.shape).astype(np.float32) / 255.0


def judge_inputs(judge, pictures) -> np.ndarray:
    """Pictures (N, H, W, 3) as the judge's inputs: its own preprocessing (resize and crop to its
    input size, `data.network_inputs`); pictures already at its size are taken as they are."""
    batch, _ = network_inputs(list(np.asarray(pictures, np.float32)), judge.spec.preprocess)
    return batch


@dataclasses.dataclass(frozen=True)
class Verdict:
    """A judge's verdict on N pictures of one class: rank (N,) of the class (0: the judge's top
    class), top (N,) the judge's top class per picture; photo_rank and gray_rank: the class's rank
    on the photo itself (None when no photo was given) and on a plain gray canvas."""

    judge: str
    weights: str
    target: int
    rank: np.ndarray
    top: np.ndarray
    photo_rank: int | None
    gray_rank: int
    same_model: bool
    names: tuple[str, ...] = ()

    @property
    def top5(self) -> np.ndarray:
        return self.rank < 5

    def top_names(self) -> list[str]:
        return [self.names[i] if i < len(self.names) else str(i) for i in self.top]

    def to_dict(self) -> dict:
        """JSON-able: the keys results.json carries (judge_rank, judge_top5, ... per picture)."""
        return {"judge": self.judge, "judge_weights": self.weights, "judge_same_model": self.same_model,
                "judge_rank": [int(r) for r in self.rank], "judge_top5": [bool(t) for t in self.top5],
                "judge_top1": self.top_names(),
                "judge_photo_rank": None if self.photo_rank is None else int(self.photo_rank),
                "judge_gray_rank": int(self.gray_rank)}

    def summary(self) -> str:
        photo = "" if self.photo_rank is None else f"; the photo itself: rank {self.photo_rank}"
        same = " (the network itself)" if self.same_model else ""
        return (f"judge {self.judge}{same}: top-5 {np.mean(self.top5):.0%}, median rank {np.median(self.rank):g}"
                f"{photo}; a gray canvas: rank {self.gray_rank}")


def judge_pictures(judge, pictures, target: int, *, photo=None, gray: float = CODE_GRAY, model=None,
                   saved: bool = True) -> Verdict:
    """The judge's verdict on pictures (N, H, W, 3) in [0, 1] (or uint8) of class `target`.

    photo: the photo the pictures explain (any image source: path, array, sample name), ranked
        beside them through the judge's own preprocessing; gray: the value of the gray canvas
        (the render's background, `RenderConfig.background`). model: the network the pictures
        were made for: checked to share the judge's classes (`check_judge`) and noted when it is
        the judge itself. saved: judge each picture as its PNG holds it (`as_saved`), so a verdict
        taken from the saved files later is the same.
    One forward pass: the pictures, the photo and the gray canvas in fixed batches."""
    if model is not None:
        check_judge(model, judge)
    arr = np.asarray(pictures)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise AttrvisError(f"the judge takes pictures (N, H, W, 3), got shape {np.shape(pictures)}")
    target = int(target)
    if not 0 <= target < len(named_classes(judge)):
        raise AttrvisError(f"class {target} is not one of the judge {judge.name}'s {len(named_classes(judge))} classes")
    arr = as_saved(arr) if saved else arr.astype(np.float32)
    size = judge.input_size
    rows = [judge_inputs(judge, arr)]
    if photo is not None:
        rows.append(network_input(photo, judge.spec.preprocess)[None])
    rows.append(np.full((1, size, size, 3), float(gray), np.float32))
    rank, top = judge_ranks(judge, np.concatenate(rows), target)
    n = len(arr)
    return Verdict(judge=judge.name, weights=judge.weights_source, target=target, rank=rank[:n], top=top[:n],
                   photo_rank=int(rank[n]) if photo is not None else None, gray_rank=int(rank[-1]),
                   same_model=model is not None and same_model(model, judge), names=named_classes(judge))
