"""torchvision's GoogLeNet (Szegedy et al. 2015, with batch norm) in Flax, evaluation mode.

This is the torchvision `googlenet` with its pretrained `.pth` (BN-Inception-style "BasicConv2d" =
conv without bias + batch norm (eps 1e-3) + ReLU), not lucid's InceptionV1 (see `inception_v1`).
Details that matter for parity:

- The max pools use torch's `ceil_mode=True` (a partial last window), the inception pool branch a
  3×3/1 pool with padding 1.
- The inception "5x5" branch (`branch3`) is a 3×3 convolution in torchvision (a known quirk of its
  port of the weights); kept as is, since the checkpoint has 3×3 kernels there.
- The auxiliary classifiers (`aux1`, `aux2`) are only used in training: their keys are ignored when
  a checkpoint is loaded. Dropout before `fc` is the identity at evaluation.
- Input: torchvision's pretrained GoogLeNet has `transform_input=True`: it receives ImageNet
  mean/std-normalized images and maps them back to the [-1, 1] scaling its weights were trained on,
  channel by channel: x_n·(s/0.5) + (m − 0.5)/0.5 with x_n = (x − m)/s, which is exactly 2x − 1.
  So our network, which takes images x in [0, 1], normalizes with 2x − 1.

Layer names are torchvision's module names ("conv1", "maxpool1", …, "inception4d", …,
"inception5b"); each is that module's output (post-ReLU for the convolutions, the concatenation of
the four post-ReLU branches for the inception blocks). Flax module paths mirror torch's module paths
("inception4d.branch2.1.conv" is "inception4d/branch2_1/conv").
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax.numpy as jnp

from attrvis_jax.labels import imagenet1k
from attrvis_jax.data import TORCHVISION_PREPROCESS
from attrvis_jax.models.base import Architecture, ModelSpec, StagedNet
from attrvis_jax.models.layers import batch_norm, conv, global_avg_pool, max_pool
from attrvis_jax.weights.convert import torchvision_rename, torchvision_rename_back

BN_EPS = 1e-3

# name: (ch1x1, ch3x3red, ch3x3, ch5x5red, ch5x5, pool_proj), torchvision's table.
INCEPTION = {
    "inception3a": (64, 96, 128, 16, 32, 32),
    "inception3b": (128, 128, 192, 32, 96, 64),
    "inception4a": (192, 96, 208, 16, 48, 64),
    "inception4b": (160, 112, 224, 24, 64, 64),
    "inception4c": (128, 128, 256, 24, 64, 64),
    "inception4d": (112, 144, 288, 32, 64, 64),
    "inception4e": (256, 160, 320, 32, 128, 128),
    "inception5a": (256, 160, 320, 32, 128, 128),
    "inception5b": (384, 192, 384, 48, 128, 128),
}

LAYERS = (
    "conv1", "maxpool1", "conv2", "conv3", "maxpool2",
    "inception3a", "inception3b", "maxpool3",
    "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
    "inception5a", "inception5b",
)


class BasicConv2d(nn.Module):
    """conv (no bias) + batch norm (eps 1e-3) + ReLU; torch's symmetric integer padding."""

    features: int
    kernel: int
    stride: int = 1
    padding: int = 0
    kernels: str = "auto"  # the CPU rewrites or plain lax, per backend (layers.rewrites)

    @nn.compact
    def __call__(self, x):
        x = conv(self.features, self.kernel, self.stride, self.padding, use_bias=False, name="conv",
                 kernels=self.kernels)(x)
        return nn.relu(batch_norm(BN_EPS, name="bn")(x))


class Inception(nn.Module):
    """Four branches concatenated on channels: 1×1 | 1×1→3×3 | 1×1→3×3 ("5x5") | pool→1×1."""

    ch1x1: int
    ch3x3red: int
    ch3x3: int
    ch5x5red: int
    ch5x5: int
    pool_proj: int
    kernels: str = "auto"  # the CPU rewrites or plain lax, per backend (layers.rewrites)

    @nn.compact
    def __call__(self, x):
        basic = functools.partial(BasicConv2d, kernels=self.kernels)
        b1 = basic(self.ch1x1, 1, name="branch1")(x)
        b2 = basic(self.ch3x3red, 1, name="branch2_0")(x)
        b2 = basic(self.ch3x3, 3, padding=1, name="branch2_1")(b2)
        b3 = basic(self.ch5x5red, 1, name="branch3_0")(x)
        b3 = basic(self.ch5x5, 3, padding=1, name="branch3_1")(b3)  # 3×3 in torchvision
        b4 = max_pool(x, 3, 1, padding=1, ceil_mode=True, kernels=self.kernels)  # torch branch4.0
        b4 = basic(self.pool_proj, 1, name="branch4_1")(b4)
        return jnp.concatenate([b1, b2, b3, b4], axis=-1)


def _pool(kernel: int, stride: int, kernels: str):
    return lambda x: max_pool(x, kernel, stride, padding=0, ceil_mode=True, kernels=kernels)


class GoogLeNet(StagedNet):
    num_classes: int = 1000
    kernels: str = "auto"  # the CPU rewrites or plain lax, per backend (layers.rewrites)

    def setup(self):
        basic = functools.partial(BasicConv2d, kernels=self.kernels)
        self.conv1 = basic(64, 7, 2, 3)
        self.conv2 = basic(64, 1)
        self.conv3 = basic(192, 3, padding=1)
        self.blocks = {name: Inception(*chans, kernels=self.kernels, name=name)
                       for name, chans in INCEPTION.items()}
        self.fc = nn.Dense(self.num_classes)

    def normalize(self, x):
        # ImageNet mean/std normalization followed by torchvision's transform_input == 2x - 1.
        return x * 2.0 - 1.0

    def stages(self):
        modules = {"conv1": self.conv1, "conv2": self.conv2, "conv3": self.conv3, **self.blocks}
        pools = {name: _pool(k, 2, self.kernels) for name, k in
                 (("maxpool1", 3), ("maxpool2", 3), ("maxpool3", 3), ("maxpool4", 2))}
        stages = [(name, modules[name] if name in modules else pools[name]) for name in LAYERS]
        stages.append(("logits", lambda x: self.fc(global_avg_pool(x))))  # dropout: identity at eval
        return stages


def torch_rename(path: str) -> str | None:
    """`inception4d.branch2.1.conv` -> `inception4d/branch2_1/conv`; aux heads -> None."""
    if path.split(".")[0] in ("aux1", "aux2"):
        return None
    return torchvision_rename(path)


SPEC = ModelSpec(
    name="googlenet",
    layers=LAYERS,
    num_classes=1000,
    preprocess=TORCHVISION_PREPROCESS,
    description="GoogLeNet, torchvision's batch-norm port (ImageNet-1k, 224x224)",
    default_layer="inception4d",
)

ARCH = Architecture(
    spec=SPEC,
    build=GoogLeNet,
    torch_rename=torch_rename,
    torch_rename_back=torchvision_rename_back,
    labels=lambda weights_path: imagenet1k(),
)
