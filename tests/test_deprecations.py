"""Every renamed name keeps its old spelling for one release: it warns (AttrvisDeprecationWarning,
naming the new spelling and pointing at the caller's line) and gives what the new one gives.
Stored records of earlier versions (sweep fingerprints and sweep.json, catalog records) still load,
without a warning. Nothing in the package uses an old spelling: importing every module and the
main paths warn nothing (tests/test_outputs.py runs attribute → visualize → evaluate → save and
the pipeline with the warning an error; setup.cfg makes it one in every test)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import attrvis_jax as av
from attrvis_jax import config as cfg
from attrvis_jax.errors import AttrvisDeprecationWarning
from tiny import tiny_model

OLD = AttrvisDeprecationWarning
ROOT = Path(__file__).resolve().parents[1]


def _rng(seed=0):
    return np.random.default_rng(seed)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


def test_the_warning_names_the_new_spelling_and_the_callers_line():
    with pytest.warns(OLD, match=r"RenderConfig\(constant=...\) is deprecated .*use background_gray=") as record:
        av.RenderConfig(constant=0.5)
    assert record[0].filename == __file__  # the user's line, not the package's: shown by default there
    assert issubclass(OLD, DeprecationWarning)


def test_render_config_constant_is_background_gray():
    new = av.RenderConfig(background_gray=0.4, perturbation="constant")
    with pytest.warns(OLD):
        old = av.RenderConfig(constant=0.4, perturbation="constant")
    assert old == new and hash(old) == hash(new) and old.background == 0.4
    with pytest.warns(OLD, match="RenderConfig.constant"):
        assert new.constant == 0.4
    with pytest.warns(OLD, match=r"replace\(constant"):
        assert av.RenderConfig().replace(constant=0.4, perturbation="constant") == new
    with pytest.warns(OLD, match=r"from_dict\(constant"):
        assert av.RenderConfig.from_dict({"constant": 0.4, "perturbation": "constant"}) == new
    with pytest.warns(OLD, match=r"visualize\(constant"):  # visualize's overrides
        assert cfg.split_options(None, None, {"constant": 0.4, "perturbation": "constant"})[0] == new
    with pytest.raises(TypeError, match="both background_gray= and its deprecated spelling"):
        av.RenderConfig(constant=0.4, background_gray=0.5)
    with pytest.warns(OLD), pytest.raises(av.AttrvisError, match=r"background_gray must be in \[0, 1\]"):
        av.RenderConfig(constant=2.0)
    with pytest.warns(OLD, match=r"the \[render\] field .constant. is deprecated .*use .background_gray."):  # a spec
        spec = cfg.SweepConfig.from_dict({"render": {"constant": 0.4}})
    assert spec.render.background_gray == 0.4
    assert "background_gray" in new.to_dict() and "constant" not in new.to_dict()


def test_stores_of_earlier_versions_resume(tmp_path):
    """A sweep's store and sweep.json, written when the gray was `constant`, pin the settings this
    version computes: the same sweep resumes them, one with another gray does not."""
    import json

    from attrvis_jax.apps import store, sweep

    config = cfg.SweepConfig(render=av.RenderConfig(background_gray=0.5))
    old_fingerprint = store.plain(sweep.fingerprint(config))
    old_fingerprint["render"]["constant"] = old_fingerprint["render"].pop("background_gray")
    for name in sweep.NEW_RENDER_FIELDS:
        old_fingerprint["render"].pop(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OLD)
        assert store.plain(sweep.upgrade_fingerprint(old_fingerprint)) == store.plain(sweep.fingerprint(config))
        spec = config.to_dict()
        spec["render"]["constant"] = spec["render"].pop("background_gray")
        (tmp_path / "sweep.json").write_text(json.dumps(spec))
        assert sweep._spec_settings(tmp_path / "sweep.json") == store.plain(sweep.fingerprint(config))
    other = config.replace(render=av.RenderConfig(background_gray=0.55))
    assert store.differences(sweep.upgrade_fingerprint(old_fingerprint), store.plain(sweep.fingerprint(other))) == [
        "render.background_gray"]


def test_rendered_is_the_kernels_private_tuple():
    from attrvis_jax.render import optimize

    with pytest.warns(OLD, match=r"attrvis_jax.render.Rendered is deprecated.*RenderResult"):
        old = av.render.Rendered
    with pytest.warns(OLD, match=r"attrvis_jax.render.optimize.Rendered"):
        assert optimize.Rendered is old is optimize._Rows
    assert "Rendered" not in av.render.__all__
    with pytest.raises(AttributeError):
        av.render.NoSuchName  # noqa: B018


def test_r_plus_is_positive_everywhere(tiny):
    from attrvis_jax.attribution import postprocess
    from attrvis_jax.render import loss, objectives

    r, acts = _rng().random((8, 8, 16), dtype=np.float32), _rng(1).random((8, 8, 16), dtype=np.float32) - 0.5
    new = objectives.attribution_objective(None, positive=r, beta=0.3, activations=acts)
    with pytest.warns(OLD, match=r"attribution_objective\(r_plus=...\)"):
        old = objectives.attribution_objective(None, r_plus=r, beta=0.3, activations=acts)
    np.testing.assert_array_equal(old.weights, new.weights)
    with pytest.warns(OLD, match="an attribution's 'r_plus'"):  # a mapping with the old key
        mapped = objectives.attribution_objective({"r_plus": r, "beta": 0.3, "activations": acts})
    np.testing.assert_array_equal(mapped.weights, new.weights)
    with pytest.warns(OLD, match=r"directed_weights\(r_plus"):
        np.testing.assert_array_equal(postprocess.directed_weights(r_plus=r, activations=acts),
                                      np.sign(acts) * r)
    with pytest.warns(OLD, match=r"code_lambda0\(r_plus_totals"):
        assert postprocess.code_lambda0(-1.0, r_plus_totals=2.0) == postprocess.code_lambda0(-1.0, 2.0) == 40.0
    with pytest.warns(OLD, match=r"attribution_score\(r_plus"):
        score = loss.attribution_score(acts[None], r_plus=r[None])
    np.testing.assert_allclose(score, np.mean(np.sum(acts * r, axis=-1)), rtol=1e-5)
    images = _rng(2).random((2, 32, 32, 3), dtype=np.float32)
    rows = lambda a: np.broadcast_to(a, (2, *a.shape))  # noqa: E731
    want = av.metrics.evaluate_rows(tiny, images, rows(r), rows(acts), "conv2", [3, 3], directed=rows(r * 2))
    with pytest.warns(OLD, match=r"evaluate_rows\(r_"):
        got = av.metrics.evaluate_rows(tiny, images, r_plus=rows(r), r_raw=rows(acts), layer="conv2",
                                       targets=[3, 3], r_directed=rows(r * 2))
    for field in ("pcc", "pcc_raw", "pcc_directed", "target_rank"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field))
    assert not np.allclose(want.pcc, want.pcc_raw)  # three different references were compared


def test_a_group_part_reads_its_old_key():
    from attrvis_jax.groups import ChannelGroups, split_attribution

    groups = ChannelGroups(groups=(np.arange(8), np.arange(8, 16)), n_factors=2, explained_variance={},
                           loadings=np.zeros((2, 16)), layer=None, channels=16)
    values = _rng().random((8, 8, 16), dtype=np.float32)
    part = split_attribution(values, groups)[1]
    assert set(part) >= {"positive", "beta", "lambda0"} and "r_plus" not in set(part)
    assert not part["positive"][..., :8].any() and part["positive"][..., 8:].any()
    with pytest.warns(OLD, match="the key 'r_plus' of a group's part"):
        assert part["r_plus"] is part["positive"]


def test_evaluate_visualizations_takes_the_attribution_and_the_result(tiny):
    photo = _rng().random((32, 32, 3), dtype=np.float32)
    attr = av.attribute(tiny, photo, layer="conv2", target=3, method="grad_x_activation")
    vis = av.visualize(tiny, attr, steps=2, seeds=2, snapshot_steps=())
    new = av.evaluate_visualizations(tiny, attr, vis)
    assert new.pcc.shape == (2,)
    np.testing.assert_array_equal(av.evaluate_visualizations(tiny, attr, vis.composed).pcc, new.pcc)
    with pytest.warns(OLD, match=r"evaluate_visualizations\(model, images, r_plus"):
        old = av.evaluate_visualizations(tiny, vis.composed, attr.positive, attr.values, "conv2", 3,
                                         r_directed=attr.directed)
    with pytest.warns(OLD):
        keywords = av.evaluate_visualizations(tiny, images=vis.composed, r_plus=attr.positive, r_raw=attr.values,
                                              layer="conv2", target=3, r_directed=attr.directed)
    for field in ("pcc", "pcc_raw", "pcc_directed", "target_rank"):
        np.testing.assert_array_equal(getattr(old, field), getattr(new, field))
        np.testing.assert_array_equal(getattr(keywords, field), getattr(new, field))
    with pytest.raises(av.AttrvisError, match="rendered at layer 'conv1'"):
        av.evaluate_visualizations(tiny, attr, av.render.RenderResult(**{**vis.__dict__, "layer": "conv1"}))


def test_load_image_takes_the_model(tiny):
    new = av.load_image("chelsea", tiny)
    np.testing.assert_array_equal(new, tiny.load_image("chelsea"))
    np.testing.assert_array_equal(av.load_image("chelsea", tiny.spec.preprocess), new)
    with pytest.warns(OLD, match=r"load_image\(pre=...\)"):
        np.testing.assert_array_equal(av.load_image("chelsea", pre=tiny.spec.preprocess), new)
    with pytest.raises(av.AttrvisError, match="load_image needs a Model or a Preprocess, got str"):
        av.load_image("chelsea", "efficientnet_lite0")


def test_figures_lists_what_a_user_calls():
    from attrvis_jax.apps import figures
    from attrvis_jax.apps.figures import layout

    assert len(figures.__all__) < 25 and "run_all" in figures.__all__ and "CELL_PAD" not in figures.__all__
    assert all(hasattr(figures, name) for name in figures.__all__)
    with pytest.warns(OLD, match=r"figures.CELL_PAD is deprecated .*use attrvis_jax.apps.figures.layout.CELL_PAD"):
        assert figures.CELL_PAD == layout.CELL_PAD
    with pytest.warns(OLD, match="use attrvis_jax.config.RenderConfig"):
        assert figures.RenderConfig is av.RenderConfig


IMPORT_ALL = """
import warnings
warnings.filterwarnings("error", message=".* is deprecated and will be removed in the next release")
import importlib, pkgutil
import attrvis_jax as av
for info in pkgutil.walk_packages(av.__path__, "attrvis_jax."):
    if info.name != "attrvis_jax.__main__":
        importlib.import_module(info.name)
for name in av.__all__:
    getattr(av, name)
print("clean")
"""


def test_nothing_in_the_package_uses_an_old_spelling():
    """Every module imported afresh (a subprocess: this one has imported them already) with the
    warning an error; what the functions do is checked by every other test (setup.cfg)."""
    out = subprocess.run([sys.executable, "-c", IMPORT_ALL], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"})
    assert out.returncode == 0 and out.stdout.strip() == "clean", out.stderr[-2000:]


def test_the_cli_shows_an_old_spelling_in_a_spec(tmp_path, capsys):
    import json

    from attrvis_jax.apps.cli import main

    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"render": {"constant": 0.5}, "seeds": 0}))  # then a bad value: no work
    assert main(["sweep", str(spec), "--out", str(tmp_path / "out"), "--quiet"]) == 1
    warning, error = capsys.readouterr().err.splitlines()
    assert warning == ("attrvis: warning: the [render] field 'constant' is deprecated and will be removed in the "
                       "next release: use 'background_gray'")
    assert error.startswith("attrvis: error: ") and "seeds must be in" in error
