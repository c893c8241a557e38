"""lucid's InceptionV1 (the "inception5h" GoogLeNet graph) in Flax, as lucent ports it.

This is the network lucid calls `InceptionV1` and lucent ships as `inception5h.pth`
(`lucent.modelzoo.inceptionv1.InceptionV1`); the attribution-visualization paper uses it. It is not
torchvision's batch-norm GoogLeNet (see `googlenet`): no batch norm, biased convolutions, two local
response normalizations, 1008 logits. Details that matter for parity with lucent:

- Input: images x in [0, 1]; the graph sees 255·x − 117 (RGB, no division by a std).
- Paddings are lucent's explicit, fixed ones, which are TF "SAME" at even input sizes: the 7×7/2
  stem pads (2, 3) on each spatial axis, the stride-2 3×3 max pools pad (0, 1) with −inf, the
  stride-1 3×3 pools (inception pool branch) pad (1, 1) with −inf, the 3×3 / 5×5 convolutions pad
  1 / 2 with zeros. (At odd input sizes TF's "SAME" would pad the stride-2 ops differently; lucent,
  and so this port, keeps the fixed pads.)
- Local response normalization (after maxpool0 and after conv2d2): lucent calls torch's
  `F.local_response_norm(size=9, alpha=1e-4, beta=0.5, k=1)`, which divides the window sum of
  squares by the window size. In TF's `local_response_normalization` terms that is
  depth_radius=4, bias=1, alpha=1e-4/9, beta=0.5.
- Head: a 7×7/1 average pool without padding (1×1 at 224²) and a linear layer to 1008 logits
  (`softmax2_pre_activation`; lucent returns the softmax, we return these logits). At other input
  sizes the pooled map is larger than 1×1: lucid/lucent then emit one logit row per position; we
  average those positions (the mean of the per-position logits) so that the output stays (N, 1008);
  a final map smaller than 7×7 is averaged whole.

Layer names are lucid's: `conv2d0` … `mixed5b`, with `maxpool4` and `maxpool10`. Each is the
post-ReLU tensor (a mixed layer is the concatenation of its four ReLU'd branches); the pool and LRN
stages between named layers belong to the next named layer (`conv2d1` = maxpool0 → LRN → conv →
ReLU). Flax module names equal lucent's module names (`mixed4d_3x3_pre_relu_conv`,
`softmax2_pre_activation_matmul`), so the state-dict key map is the identity.

Class names are not bundled: they travel with the weights (`imagenet_comp_graph_label_strings.txt`
in lucid's inception5h.zip: index 0 is "dummy", then 1000 classes in that graph's own order; the
last 7 logits are unnamed).
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp

from attrvis_jax.labels import generic_labels, read_label_file
from attrvis_jax.data import Preprocess
from attrvis_jax.models.base import Architecture, ModelSpec, StagedNet
from attrvis_jax.models.layers import conv, local_response_norm, max_pool

NUM_CLASSES = 1008
NUM_NAMES = 1001  # lines of imagenet_comp_graph_label_strings.txt ("dummy" + 1000); logits 1001..1007 are unnamed

# name: (1x1, 3x3_bottleneck, 3x3, 5x5_bottleneck, 5x5, pool_reduce) output channels.
MIXED = {
    "mixed3a": (64, 96, 128, 16, 32, 32),
    "mixed3b": (128, 128, 192, 32, 96, 64),
    "mixed4a": (192, 96, 204, 16, 48, 64),
    "mixed4b": (160, 112, 224, 24, 64, 64),
    "mixed4c": (128, 128, 256, 24, 64, 64),
    "mixed4d": (112, 144, 288, 32, 64, 64),
    "mixed4e": (256, 160, 320, 32, 128, 128),
    "mixed5a": (256, 160, 320, 48, 128, 128),
    "mixed5b": (384, 192, 384, 48, 128, 128),
}
BRANCHES = ("1x1", "3x3_bottleneck", "3x3", "5x5_bottleneck", "5x5", "pool_reduce")
KERNELS = {"1x1": 1, "3x3_bottleneck": 1, "3x3": 3, "5x5_bottleneck": 1, "5x5": 5, "pool_reduce": 1}

LAYERS = (
    "conv2d0", "conv2d1", "conv2d2", "mixed3a", "mixed3b", "maxpool4",
    "mixed4a", "mixed4b", "mixed4c", "mixed4d", "mixed4e", "maxpool10", "mixed5a", "mixed5b",
)

# lucent: F.local_response_norm(size=9, alpha=9.99999974738e-05, beta=0.5, k=1), i.e.
# x / (k + alpha/size * sum_{9 channels} x^2) ** beta; in TF's parameters:
LRN_SIZE = 9
LRN = dict(depth_radius=LRN_SIZE // 2, bias=1.0, alpha=9.99999974738e-05 / LRN_SIZE, beta=0.5)

STEM_PAD = ((2, 3), (2, 3))  # lucent's F.pad(x, (2, 3, 2, 3)) before the 7x7/2 conv
POOL2_PAD = ((0, 1), (0, 1))  # lucent's -inf F.pad(x, (0, 1, 0, 1)) before each 3x3/2 max pool


def _conv_name(prefix: str) -> str:
    return f"{prefix}_pre_relu_conv"


def max_pool_3x3(x: jax.Array, stride: int, kernels: str = "auto") -> jax.Array:
    """lucent's max pools: pad with -inf ((0, 1) for stride 2, (1, 1) for stride 1), 3x3 window."""
    pads = POOL2_PAD if stride == 2 else ((1, 1), (1, 1))
    return max_pool(x, 3, stride, padding=pads, kernels=kernels)


def avg_pool_logits_input(x: jax.Array) -> jax.Array:
    """lucent's 7x7/1 average pool (no padding), then the mean over any remaining positions.

    A map smaller than 7x7 (inputs under ~200 px, where lucent's pool raises) is averaged whole.
    """
    window = (min(7, x.shape[1]), min(7, x.shape[2]))
    x = nn.avg_pool(x, window, (1, 1), padding="VALID")
    return jnp.mean(x, axis=(1, 2))


class InceptionV1(StagedNet):
    """lucid's InceptionV1 as a chain of named stages (see the module docstring)."""

    num_classes: int = NUM_CLASSES
    kernels: str = "auto"  # the CPU rewrites or plain lax, per backend (layers.rewrites)

    def setup(self):
        conv_ = functools.partial(conv, kernels=self.kernels)
        convs = {
            "conv2d0": conv_(64, 7, 2, padding=STEM_PAD, name=_conv_name("conv2d0")),
            "conv2d1": conv_(64, 1, padding="VALID", name=_conv_name("conv2d1")),
            "conv2d2": conv_(192, 3, padding=1, name=_conv_name("conv2d2")),
        }
        for mixed, channels in MIXED.items():
            for branch, features in zip(BRANCHES, channels):
                k = KERNELS[branch]
                name = _conv_name(f"{mixed}_{branch}")
                convs[f"{mixed}_{branch}"] = conv_(features, k, padding=k // 2, name=name)
        self.convs = convs
        self.softmax2_pre_activation_matmul = nn.Dense(self.num_classes)

    def normalize(self, x):
        return x * 255.0 - 117.0

    def _relu_conv(self, key: str, x):
        return nn.relu(self.convs[key](x))

    def _mixed(self, name: str, x):
        b1 = self._relu_conv(f"{name}_1x1", x)
        b2 = self._relu_conv(f"{name}_3x3", self._relu_conv(f"{name}_3x3_bottleneck", x))
        b3 = self._relu_conv(f"{name}_5x5", self._relu_conv(f"{name}_5x5_bottleneck", x))
        b4 = self._relu_conv(f"{name}_pool_reduce", max_pool_3x3(x, 1, self.kernels))
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)

    def stages(self):
        lrn = lambda x: local_response_norm(x, **LRN)
        mixed = lambda name: (name, lambda x: self._mixed(name, x))
        return [
            ("conv2d0", lambda x: self._relu_conv("conv2d0", x)),
            ("conv2d1", lambda x: self._relu_conv("conv2d1", lrn(max_pool_3x3(x, 2, self.kernels)))),  # maxpool0, LRN0
            ("conv2d2", lambda x: self._relu_conv("conv2d2", x)),
            ("mixed3a", lambda x: self._mixed("mixed3a", max_pool_3x3(lrn(x), 2, self.kernels))),  # LRN1, maxpool1
            mixed("mixed3b"),
            ("maxpool4", lambda x: max_pool_3x3(x, 2, self.kernels)),
            mixed("mixed4a"),
            mixed("mixed4b"),
            mixed("mixed4c"),
            mixed("mixed4d"),
            mixed("mixed4e"),
            ("maxpool10", lambda x: max_pool_3x3(x, 2, self.kernels)),
            mixed("mixed5a"),
            mixed("mixed5b"),
            ("logits", lambda x: self.softmax2_pre_activation_matmul(avg_pool_logits_input(x))),
        ]


def torch_rename(path: str) -> str:
    """lucent module name -> Flax module path: the same flat name."""
    return path


def torch_rename_back(path: str) -> str:
    return path


LABEL_FILE_NAMES = ("imagenet_comp_graph_label_strings.txt", "{stem}_labels.txt", "labels.txt")


def labels(weights_path: Path | None) -> tuple[str, ...]:
    """The class names that travel with the weights, else generic names (with a warning).

    Looks next to the weight file for `imagenet_comp_graph_label_strings.txt` (the name inside
    lucid's inception5h.zip), `<weights stem>_labels.txt`, then `labels.txt`. Random weights
    (weights_path None) have no classes to name: generic names, no warning.
    """
    if weights_path is None:
        return generic_labels(NUM_CLASSES)
    weights_path = Path(weights_path)
    for pattern in LABEL_FILE_NAMES:
        candidate = weights_path.parent / pattern.format(stem=weights_path.stem)
        if candidate.is_file():
            return read_label_file(candidate, NUM_CLASSES, NUM_NAMES, "inception_v1")
    where = f" next to {weights_path.name}"
    warnings.warn(
        f"inception_v1: no class-name file found{where} (looked for "
        f"{', '.join(LABEL_FILE_NAMES)}); using generic names class_0..class_{NUM_CLASSES - 1}. "
        "Pass labels=<path to imagenet_comp_graph_label_strings.txt> to load_model for real names.",
        stacklevel=3,
    )
    return generic_labels(NUM_CLASSES)


SPEC = ModelSpec(
    name="inception_v1",
    layers=LAYERS,
    num_classes=NUM_CLASSES,
    # The authors' code: cv2.resize to 224x224, cubic, aspect ratio not kept, no clipping.
    preprocess=Preprocess(size=224, mode="stretch", resize=None, resample="bicubic", clip=False),
    description="lucid's InceptionV1 / GoogLeNet 'inception5h' graph (lucent's inception5h.pth; 1008 logits, 224x224)",
    default_layer="mixed4d",  # the authors' released default
    num_names=NUM_NAMES,
)

ARCH = Architecture(
    spec=SPEC,
    build=InceptionV1,
    torch_rename=torch_rename,
    torch_rename_back=torch_rename_back,
    labels=labels,
)
