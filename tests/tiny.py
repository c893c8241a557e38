"""A tiny random StagedNet (32×32 input, conv1 16×16×8, conv2 8×8×16, 10 classes) for tests of the
render kernel that must run in seconds; `signed=True` leaves conv2 without its ReLU (a signed layer).
`tiny_judge()` is another one of the same classes (other weights, a 40×40 input) to judge its pictures."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from attrvis_jax.data import Preprocess
from attrvis_jax.models.base import Model, ModelSpec, StagedNet

SIZE = 32


class TinyNet(StagedNet):
    signed: bool = False

    def setup(self):
        self.c1 = nn.Conv(8, (3, 3), (2, 2))
        self.c2 = nn.Conv(16, (3, 3), (2, 2))
        self.fc = nn.Dense(10)

    def normalize(self, x):
        return x * 2 - 1

    def stages(self):
        conv2 = (lambda x: self.c2(x)) if self.signed else (lambda x: nn.relu(self.c2(x)))
        return [("conv1", lambda x: nn.relu(self.c1(x))), ("conv2", conv2),
                ("logits", lambda x: self.fc(nn.relu(x).mean((1, 2))))]


def tiny_model(signed: bool = False) -> Model:
    net = TinyNet(signed=signed)
    variables = jax.jit(net.init)(jax.random.key(0), jnp.zeros((1, SIZE, SIZE, 3)))
    spec = ModelSpec("tiny", ("conv1", "conv2"), 10, Preprocess(size=SIZE))
    return Model(spec, net, variables, tuple(str(i) for i in range(10)))


JUDGE_SIZE = 40


def tiny_judge() -> Model:
    """Another tiny network with the same 10 classes: other weights, a 40×40 input that it reaches
    by its own preprocessing (resize the shorter side to 44, crop the center), for judge tests."""
    net = TinyNet()
    variables = jax.jit(net.init)(jax.random.key(7), jnp.zeros((1, JUDGE_SIZE, JUDGE_SIZE, 3)))
    spec = ModelSpec("tiny_judge", ("conv1", "conv2"), 10, Preprocess(size=JUDGE_SIZE, resize=44))
    return Model(spec, net, variables, tuple(str(i) for i in range(10)), weights_source="tiny key 7")
