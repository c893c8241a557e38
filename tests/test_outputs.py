"""`RenderResult.save(folder)` writes what `attrvis run` writes of a render (the same functions,
attrvis_jax/outputs.py): checked on a tiny network by running the pipeline and, with the same keys,
attribute → visualize → save, then comparing the two folders file by file — the same names, the
same pixels, the same arrays, the same numbers. `RenderResult.load` gives the arrays back, and the
folder rules of a run (refuse a user's file, replace an earlier result only when asked) hold."""

from __future__ import annotations

import dataclasses
import json
import warnings

import jax
import numpy as np
import pytest
from PIL import Image

import attrvis_jax as av
from attrvis_jax import outputs, pictures
from attrvis_jax.apps import pipeline
from attrvis_jax.errors import AttrvisDeprecationWarning, AttrvisError
from tiny import tiny_model

ATTRIBUTION = av.AttributionConfig(spatial_steps=2, channel_steps=2, steps=4)
RENDER = av.RenderConfig(steps=4)
OPTIONS = av.RunOptions(seeds=2, snapshot_steps=())
SEED = 5
METHOD = "grad_x_activation"  # no baseline to compile: the files are the same kind with any method


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """(the run's folder, the saved folder, the attribution, the render): the main paths run with
    every deprecated spelling an error, so nothing on them uses one."""
    root = tmp_path_factory.mktemp("outputs")
    model = tiny_model()
    photo = np.random.default_rng(0).random((40, 48, 3)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", AttrvisDeprecationWarning)
        pipeline.run(model, photo, root / "run", layer="conv2", target=3, method=METHOD,
                     attribution_config=ATTRIBUTION, render_config=RENDER, run_options=OPTIONS, seed=SEED, quiet=True)
        attr_key, render_key = jax.random.split(jax.random.key(SEED))  # the pipeline's keys
        attr = av.attribute(model, av.load_image(photo, model), layer="conv2", target=3, method=METHOD,
                            config=ATTRIBUTION, key=attr_key)
        vis = av.visualize(model, attr, RENDER, key=render_key, options=OPTIONS)
        av.evaluate_visualizations(model, attr, vis)
        saved = vis.save(root / "saved", attr)
    return root / "run", saved, attr, vis


def _pixels(path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def test_save_writes_what_the_run_writes_of_a_render(made):
    run, saved, attr, vis = made
    names = sorted(p.name for p in saved.iterdir())
    assert names == sorted(outputs.result_files((0, 1), attribution=True, photo=True))
    assert set(p.name for p in run.iterdir()) - set(names) == {"contact_sheet.png", "report.html"}
    for name in names:
        if name.endswith(".png"):
            np.testing.assert_array_equal(_pixels(saved / name), _pixels(run / name), err_msg=name)
        elif name.endswith(".npz"):
            with np.load(saved / name) as a, np.load(run / name) as b:
                assert sorted(a.files) == sorted(b.files)
                for key in a.files:
                    if key != "meta":  # the meta record holds timings
                        np.testing.assert_array_equal(a[key], b[key], err_msg=f"{name}: {key}")
    ours = json.loads((saved / "results.json").read_text())
    theirs = json.loads((run / "results.json").read_text())
    assert ours["files"] == outputs.result_files((0, 1), attribution=True, photo=True)
    assert theirs["files"] == outputs.run_files((0, 1))
    del ours["files"]
    assert {k: theirs[k] for k in ours} == ours
    # the numbers are the result's, not just equal to each other
    assert ours["final_loss"] == [float(v) for v in vis.loss] and ours["target_index"] == 3
    assert ours["mask_area"] == pytest.approx(vis.mask_area.tolist()) and ours["beta"] == pytest.approx(attr.beta)
    # and the pictures are the render's: seed 1's composed picture and mask, as PNG makes them
    np.testing.assert_array_equal(_pixels(saved / "seed01.png"), pictures.to_uint8(vis.composed[1]))
    np.testing.assert_array_equal(_pixels(saved / "seed01_mask.png"), pictures.to_uint8(vis.masks[1]))
    np.testing.assert_array_equal(_pixels(saved / "input.png"), attr.image)


def test_load_gives_the_arrays_back(made):
    run, saved, attr, vis = made
    for folder in (saved, run, saved / "render.npz"):
        back = av.RenderResult.load(folder)
        for field in ("images", "masks", "loss", "mask_area", "finite", "stopped_at", "loss_history"):
            np.testing.assert_array_equal(getattr(back, field), getattr(vis, field), err_msg=field)
        np.testing.assert_allclose(back.composed, vis.composed, rtol=0, atol=1e-6)
        assert (back.config, back.options, back.layer, back.seed_ids) == (vis.config, vis.options, "conv2", (0, 1))
    loaded = av.Attribution.load(saved / "attribution.npz")
    np.testing.assert_array_equal(loaded.positive, attr.positive)


def test_the_folder_rules_of_a_run(made, tmp_path):
    run, saved, attr, vis = made
    out = tmp_path / "out"
    out.mkdir()
    (out / "seed00.png").write_text("mine")  # a file of one of its names, not an earlier result's
    (out / "notes.txt").write_text("mine")
    with pytest.raises(AttrvisError, match="seed00.png is not an earlier result's file"):
        vis.save(out)
    (out / "seed00.png").unlink()
    vis.save(out)  # beside other files: they stay
    assert (out / "notes.txt").read_text() == "mine" and (out / "seed01_mask.png").is_file()
    with pytest.raises(AttrvisError, match=r"holds an earlier result .*pass overwrite=True to replace it"):
        vis.save(out)
    one = dataclasses.replace(vis, **{f: getattr(vis, f)[:1] for f in (
        "images", "masks", "composed", "loss", "mask_area", "finite", "stopped_at", "loss_history")}, seed_ids=(0,))
    one.save(out, overwrite=True)  # replaced whole: the earlier seed 1 goes, the user's notes stay
    assert sorted(p.name for p in out.iterdir()) == sorted(outputs.result_files((0,)) + ["notes.txt"])
    # a run's folder is an earlier result to save (and a saved one an earlier run to `attrvis run`)
    assert sorted(outputs.earlier_result(run)) == sorted(outputs.run_files((0, 1)))
    assert pipeline.earlier_run(saved) == outputs.result_files((0, 1), attribution=True, photo=True)
    with pytest.raises(AttrvisError, match="the render is at layer 'conv2', the attribution at 'conv1'"):
        vis.save(tmp_path / "other", dataclasses.replace(attr, layer="conv1"))


def test_a_grouped_render_saves_its_groups_side_by_side(made, tmp_path):
    vis = made[3]
    two = lambda a: np.stack([a, 1 - a], axis=1)  # noqa: E731 - two "groups" per seed
    grouped = dataclasses.replace(vis, images=two(vis.images), masks=two(vis.masks), composed=two(vis.composed),
                                  mask_area=two(vis.mask_area), beta=np.array([0.2, 0.3]),
                                  lambda0=np.array([20.0, 20.0]), reference=np.array([1.0, 2.0]), grouped=True)
    folder = grouped.save(tmp_path / "groups")
    np.testing.assert_array_equal(_pixels(folder / "seed01.png"), pictures.to_uint8(
        np.concatenate([vis.composed[1], 1 - vis.composed[1]], axis=1)))
    numbers = json.loads((folder / "results.json").read_text())
    assert numbers["beta"] == [0.2, 0.3] and np.shape(numbers["mask_area"]) == (2, 2)
    back = av.RenderResult.load(folder)
    assert back.grouped and back.images.shape == grouped.images.shape
