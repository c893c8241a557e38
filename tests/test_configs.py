"""The named presets (`attrvis_jax.configs`) hold the numbers the commands and drivers used before
they moved there, and the perturbation names have one list, one map of the authors' names and one
gray."""

from __future__ import annotations

import math

import pytest

from attrvis_jax import configs
from attrvis_jax.config import (
    CODE_GRAY, PERTURBATION_ALIASES, PERTURBATIONS, AttributionConfig, RenderConfig, RunOptions, SweepConfig,
)
from attrvis_jax.errors import UnknownNameError


def test_names_and_lookup():
    assert configs.names() == ("paper", "demo", "reduced", "ablation")
    assert set(configs.FIGURE_SCHEDULES) <= set(configs.names())
    with pytest.raises(UnknownNameError, match="unknown preset 'nope'"):
        configs.get("nope")
    assert configs.get("demo") == configs.get("demo") and configs.get("demo") is not configs.get("demo")


def test_paper_is_the_library_defaults():
    p = configs.get("paper")
    assert (p.render, p.attribution) == (RenderConfig(), AttributionConfig())
    assert (p.render.steps, p.run.seeds, p.render.lr) == (2048, 25, 0.02) and p.run == RunOptions()
    assert (p.nmf_factors, p.views, p.spectrum_draws, p.scale_lr) == (4, 8, 32, False)


def test_demo():
    d = configs.get("demo")
    assert (d.model, d.image) == ("efficientnet_lite0", "chelsea")
    assert d.render == RenderConfig(steps=320, lr=0.05) and d.run == RunOptions(seeds=2)
    assert d.attribution == AttributionConfig(spatial_steps=512, channel_steps=1024, steps=100)


def test_reduced_scales_the_papers_lr_with_the_steps():
    r = configs.get("reduced")
    assert (r.render.steps, r.run.seeds, r.scale_lr) == (128, 2, True)
    assert r.render.lr == configs.paper.scaled_lr(128) == 0.02 * math.sqrt(2048 / 128)
    assert configs.paper.scaled_lr(2048) == 0.02 and configs.paper.scaled_lr(8) == 0.02 * math.sqrt(2048 / 8)
    assert r.attribution == AttributionConfig(spatial_steps=256, channel_steps=512, steps=64)
    assert (r.nmf_factors, r.views, r.spectrum_draws) == (3, 4, 8)


def test_ablation():
    a = configs.get("ablation")
    assert a == SweepConfig(
        model="efficientnet_lite0", weights="default", images=("sample:chelsea",), targets=("top1",),
        layers=("default",), perturbations=("none", "constant", "gaussian", "blur", "fractal", "pyramid"), seeds=8,
        key=0, batch=8, attribution=AttributionConfig(fidelity="code", spatial_steps=512, channel_steps=1024, steps=100),
        render=RenderConfig(fidelity="default", steps=256, lr=0.05, area_weight=20.0))
    assert sorted(a.perturbations) == sorted(PERTURBATIONS)
    assert configs.baseline_steps(7) == {"spatial_steps": 7, "channel_steps": 14}


def test_one_alias_map_and_one_gray():
    assert PERTURBATION_ALIASES == {
        "constback": "constant", "const": "constant", "normal": "gaussian", "blurimage": "blur", "noise": "fractal",
        "noisepyramid": "pyramid", "nomask": "none", "no_mask": "none", "no-mask": "none"}
    assert CODE_GRAY == 0.55 == RenderConfig(fidelity="code").background == RenderConfig().background
    assert RenderConfig(fidelity="paper").background == 0.5
