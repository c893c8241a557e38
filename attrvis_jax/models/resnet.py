"""torchvision's ResNet-50 (He et al. 2016, "v1.5") in Flax, evaluation mode.

v1.5: in each downsampling bottleneck the stride 2 sits on the 3×3 convolution (`conv2`) and on the
1×1 projection shortcut (`downsample.0`), not on the first 1×1 convolution. Batch norm eps 1e-5;
the stem's max pool is 3×3/2 with padding 1 (no ceil mode). Input: ImageNet mean/std
normalization of images in [0, 1], done inside the network.

Layer names are torchvision's module paths: "relu" (the stem after conv1 + bn1 + ReLU, 112×112),
"maxpool" (56×56), then every bottleneck's output "layer1.0" … "layer4.2" (post-ReLU, after the
residual addition). Flax module paths mirror torch's ("layer3.0.downsample.1" is
"layer3_0/downsample_1").

Aliases: "conv1" is the stem ("relu"; torch's `conv1` module itself is pre-BN, which no stage
exposes); "layer1" … "layer4" name each stage's last block; and the paper's He et al. stage names
block2a–c, block3a–d, block4a–f, block5a–c map to layer1.0–2, layer2.0–3, layer3.0–5, layer4.0–2.
Caution: the paper's ResNet-50 is lucid's TF-slim `resnet_v1_50`, which downsamples in the *last*
unit of a stage rather than the first (slim block1/unit_3, the paper's block2c, is already 28×28,
torchvision's layer1.2 is 56×56). The aliases therefore name the corresponding torchvision block,
not an identical tensor (block2c, block3d and block4f are twice as large here as in the paper), and
torchvision's weights are a different network from the paper's.
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

BN_EPS = 1e-5
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# (blocks, bottleneck width, stride of the first block) per stage layer1..layer4.
STAGES = ((3, 64, 1), (4, 128, 2), (6, 256, 2), (3, 512, 2))
EXPANSION = 4

LAYERS = ("relu", "maxpool") + tuple(
    f"layer{s}.{b}" for s, (n, _, _) in enumerate(STAGES, start=1) for b in range(n)
)


def _aliases() -> tuple[tuple[str, str], ...]:
    aliases = [("conv1", "relu")]
    aliases += [(f"layer{s}", f"layer{s}.{n - 1}") for s, (n, _, _) in enumerate(STAGES, start=1)]
    # He et al. numbering: paper block(s+1) = torchvision layer s; units lettered a, b, c, ...
    aliases += [
        (f"block{s + 1}{chr(ord('a') + b)}", f"layer{s}.{b}")
        for s, (n, _, _) in enumerate(STAGES, start=1)
        for b in range(n)
    ]
    return tuple(aliases)


class Bottleneck(nn.Module):
    """1×1 → 3×3 (stride here: v1.5) → 1×1 (×4 channels), plus the (projected) input, ReLU."""

    width: int
    stride: int = 1
    project: bool = False  # torch's `downsample`: 1×1 conv (stride) + BN on the shortcut
    kernels: str = "auto"  # the CPU rewrites or plain lax, per backend (layers.rewrites)

    @nn.compact
    def __call__(self, x):
        conv_ = functools.partial(conv, use_bias=False, kernels=self.kernels)
        out = nn.relu(batch_norm(BN_EPS, "bn1")(conv_(self.width, 1, padding=0, name="conv1")(x)))
        out = conv_(self.width, 3, self.stride, padding=1, name="conv2")(out)
        out = nn.relu(batch_norm(BN_EPS, "bn2")(out))
        out = batch_norm(BN_EPS, "bn3")(conv_(self.width * EXPANSION, 1, padding=0, name="conv3")(out))
        shortcut = x
        if self.project:
            shortcut = conv_(self.width * EXPANSION, 1, self.stride, padding=0, name="downsample_0")(x)
            shortcut = batch_norm(BN_EPS, "downsample_1")(shortcut)
        return nn.relu(out + shortcut)


class ResNet50(StagedNet):
    num_classes: int = 1000
    kernels: str = "auto"  # the CPU rewrites or plain lax, per backend (layers.rewrites)

    def setup(self):
        self.conv1 = conv(64, 7, 2, padding=3, use_bias=False, kernels=self.kernels)
        self.bn1 = batch_norm(BN_EPS)
        blocks = {}
        cin = 64
        for s, (n, width, stride) in enumerate(STAGES, start=1):
            for b in range(n):
                first = b == 0
                blocks[f"layer{s}.{b}"] = Bottleneck(
                    width,
                    stride=stride if first else 1,
                    project=first and (stride != 1 or cin != width * EXPANSION),
                    kernels=self.kernels,
                    name=f"layer{s}_{b}",
                )
                cin = width * EXPANSION
        self.blocks = blocks
        self.fc = nn.Dense(self.num_classes)

    def normalize(self, x):
        mean = jnp.asarray(IMAGENET_MEAN, x.dtype)
        std = jnp.asarray(IMAGENET_STD, x.dtype)
        return (x - mean) / std

    def stages(self):
        stages = [
            ("relu", lambda x: nn.relu(self.bn1(self.conv1(x)))),
            ("maxpool", lambda x: max_pool(x, 3, 2, padding=1, kernels=self.kernels)),
        ]
        stages += list(self.blocks.items())
        stages.append(("logits", lambda x: self.fc(global_avg_pool(x))))
        return stages


SPEC = ModelSpec(
    name="resnet50",
    layers=LAYERS,
    num_classes=1000,
    preprocess=TORCHVISION_PREPROCESS,
    aliases=_aliases(),
    description="ResNet-50 v1.5, torchvision (ImageNet-1k, 224x224)",
    default_layer="layer3.5",
)

ARCH = Architecture(
    spec=SPEC,
    build=ResNet50,
    torch_rename=torchvision_rename,
    torch_rename_back=torchvision_rename_back,
    labels=lambda weights_path: imagenet1k(),
)
