"""The paper's figures (`attrvis_jax.apps.figures`): exact checks of the pure pieces (spectrum, NMF, the
class-targeted channel rule, grid geometry), and one shared `run_all` on EfficientNet-Lite0 with a
tiny schedule (8 render updates, 2 seeds, a cheap attribution, two stages, two views) whose files
are checked for existence, grid size, non-blank pixels and their JSON numbers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from attrvis_jax.apps import figures as F
from attrvis_jax.apps.figures.analysis import (
    amplitude_spectrum, comparison_maps, nmf, radial_profile, select_class_neurons, spectral_slope,
)
from attrvis_jax.apps.figures.comparison import comparison_objective
from attrvis_jax.apps.figures.layout import CAPTION_H, CELL_PAD, TITLE_LINE, TITLE_PAD, grid_figure, grid_size
from attrvis_jax.apps.figures.spectra import SPECTRA_DPI, SPECTRA_FIGSIZE
from attrvis_jax.config import AttributionConfig, RenderConfig

# Tiny: every figure and every column, but each render is 8 updates of 2 seeds, so compiling dominates
# (about 8 render and 3 attribution compiles): the loop engine compiles faster on a CPU.
# The layer figure gets stage1 (blocks.0: the cheapest render to compile) and stage6, the main layer
# (the model's default layer, shared with the other figures).
TEST_SCHEDULE = F.Schedule(name="test", steps=8, seeds=2, lr=0.5, spatial_steps=8, channel_steps=8, path_steps=8,
                           nmf_factors=2, views=2, stages=("stage1", "stage6"), spectrum_draws=2, chunk_size=8,
                           engine="loop")
NAMES = ("spectra", "comparison", "perturbations", "layers", "groups")


# ---- pure pieces -------------------------------------------------------------------------------
def test_spectrum_of_a_constant_background_is_a_dc_spike():
    amp = amplitude_spectrum(np.full((2, 32, 32, 3), 0.55, np.float32))
    assert amp.shape == (32, 32)
    assert amp[0, 0] == pytest.approx(0.55, rel=1e-5)
    rest = amp.copy()
    rest[0, 0] = 0
    assert rest.max() < 1e-6
    radii, profile = radial_profile(amp)
    assert radii.tolist() == list(range(17))
    assert profile[0] == pytest.approx(0.55, rel=1e-5) and profile[1:].max() < 1e-6
    assert spectral_slope(radii, profile) is None  # nothing beyond DC to fit


def test_radial_profile_finds_a_planted_frequency_and_white_noise_is_flat():
    n = 64
    yy, xx = np.mgrid[0:n, 0:n]
    wave = 0.5 + 0.25 * np.cos(2 * np.pi * 5 * xx / n)  # 5 cycles per image along x
    radii, profile = radial_profile(amplitude_spectrum(np.repeat(wave[..., None], 3, -1)))
    assert profile[0] == pytest.approx(0.5, rel=1e-5)
    assert int(np.argmax(profile[1:])) + 1 == 5
    noise = np.random.default_rng(0).normal(size=(16, n, n, 3)).astype(np.float32)
    radii, profile = radial_profile(amplitude_spectrum(noise))
    assert abs(spectral_slope(radii, profile)) < 0.1
    # 1/f^p amplitude (p = 1.5) has slope -1.5 on log-log axes.
    assert spectral_slope(radii[1:], 1.0 / radii[1:] ** 1.5) == pytest.approx(-1.5, abs=1e-9)


def test_nmf_reconstructs_a_planted_nonnegative_low_rank_matrix():
    rng = np.random.default_rng(1)
    w_true = rng.random((60, 3)) * (rng.random((60, 3)) > 0.4)
    h_true = rng.random((3, 20)) * (rng.random((3, 20)) > 0.4)
    v = w_true @ h_true
    w, h = nmf(v, 3, iterations=3000)
    assert w.shape == (60, 3) and h.shape == (3, 20)
    assert (w >= 0).all() and (h >= 0).all()
    assert np.linalg.norm(v - w @ h) / np.linalg.norm(v) < 0.02
    np.testing.assert_allclose(h.max(axis=1), 1.0)  # each factor's channel weights peak at 1
    w2, h2 = nmf(v, 3, iterations=3000)
    np.testing.assert_array_equal(w, w2)  # deterministic
    share = np.linalg.norm(w, axis=0) * np.linalg.norm(h, axis=1)
    assert np.all(np.diff(share) <= 1e-12)  # largest factor first
    with pytest.raises(Exception):
        nmf(-v, 2)


def test_class_targeted_selection_rule_on_a_hand_made_case():
    scores = np.array([0.5, -3.0, 4.0, 0.0, 2.0, 1.5, 2.0])
    # positive total 10; ranked 4.0 (ch 2), 2.0 (ch 4), 2.0 (ch 6), 1.5 (ch 5), 0.5 (ch 0).
    assert select_class_neurons(scores, share=0.5).tolist() == [2, 4]  # 4 + 2 = 6 >= 5
    assert select_class_neurons(scores, share=0.4).tolist() == [2]  # 4 >= 4 exactly
    assert select_class_neurons(scores, share=0.61).tolist() == [2, 4, 6]  # tie broken by index
    assert select_class_neurons(scores, share=1.0).tolist() == [0, 2, 4, 5, 6]  # never a negative or zero one
    assert select_class_neurons(scores, share=1.0, max_channels=2).tolist() == [2, 4]
    assert select_class_neurons(-np.abs(scores)).size == 0


def test_comparison_maps_are_normalized_nonnegative_objectives():
    rng = np.random.default_rng(0)
    acts = rng.random((5, 5, 8)) - 0.3
    scores = np.array([1.0, -1.0, 0.0, 3.0, 0.5, 0.0, 0.0, 0.0])
    maps = comparison_maps(acts, scores, 2, share=0.7)
    assert maps["selected"].tolist() == [0, 3]
    for m in [maps["all"], maps["class"], *maps["factors"]]:
        assert (m >= 0).all() and m.sum() == pytest.approx(1.0, rel=1e-5)
    assert np.count_nonzero(maps["class"].sum(axis=(0, 1))) <= 2


def test_comparison_column_d_is_the_method_without_its_mask():
    # (d) "ours without mask" optimizes what visualize does for the attribution with perturbation
    # "none": sign(a - b)·R+ by default (a signed layer here), R+ itself under the code's fidelity.
    from attrvis_jax.errors import AttrvisError
    from attrvis_jax.render import objectives

    rng = np.random.default_rng(3)
    a = rng.normal(size=(5, 5, 8)).astype(np.float32)
    b = (0.5 * a + 0.3 * rng.normal(size=a.shape)).astype(np.float32)
    r = np.abs(rng.normal(size=a.shape)).astype(np.float32)
    attr = {"positive": r, "beta": 0.2, "activations": a, "baseline": b, "layer": "blocks.14"}
    maps = comparison_maps(a, rng.normal(size=8), 2, share=0.7)
    abc = np.concatenate([maps["all"][None], maps["factors"], maps["class"][None]])
    for fidelity, d in (("default", np.sign(a - b) * r), ("code", r)):
        config = RenderConfig(perturbation="none", fidelity=fidelity)
        obj = comparison_objective(maps, attr, config)
        assert obj.groups == 5 and obj.layer == "blocks.14" and obj.grouped  # (a), (b) x 2, (c), (d)
        np.testing.assert_array_equal(obj.weights[:4], abc)
        np.testing.assert_array_equal(obj.weights[4], d)
        np.testing.assert_array_equal(obj.weights[4], objectives.attribution_objective(attr, config).weights[0])
    assert (np.sign(a - b) < 0).any()  # the default and the code's (d) do differ here
    with pytest.raises(AttrvisError, match="without a mask"):
        comparison_objective(maps, attr, RenderConfig())


def test_grid_geometry():
    cells = [np.full((20, 20, 3), v, np.float32) for v in np.linspace(0, 1, 5)]
    image, layout = grid_figure(cells, [f"c{i}" for i in range(5)], columns=3, title=["a title"])
    assert (layout["rows"], layout["columns"], layout["title_lines"]) == (2, 3, 1)
    assert image.shape[:2] == grid_size(2, 3, 20, 1) == (TITLE_PAD + TITLE_LINE + 2 * (20 + 6 + 16) + 6, 3 * 26 + 6)


def test_schedules():
    assert F.get_schedule("paper").render_config("pyramid").steps == 2048
    assert F.get_schedule("paper").run_options.seeds == 25
    assert F.get_schedule("paper").attribution_config() == AttributionConfig()
    reduced = F.get_schedule("reduced", seeds=3)
    assert reduced.seeds == 3 and 128 <= reduced.steps <= 256
    assert reduced.learning_rate == pytest.approx(0.02 * (2048 / reduced.steps) ** 0.5)
    assert F.get_schedule("paper").learning_rate == 0.02
    with pytest.raises(Exception):
        F.get_schedule("nope")


# ---- one shared run ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def run(tmp_path_factory, lite0):
    out = tmp_path_factory.mktemp("figures")
    result = F.run_all("efficientnet_lite0", out, schedule=TEST_SCHEDULE, image="chelsea", model=lite0, quiet=True)
    return out, result


def _load(out, name):
    with open(out / f"{name}.json") as f:
        record = json.load(f)
    image = np.asarray(Image.open(out / f"{name}.png").convert("RGB"))
    return record, image


def _cell(image, layout, row, col):
    s = layout["cell"]
    top = TITLE_PAD + layout["title_lines"] * TITLE_LINE + CELL_PAD + row * (s + CELL_PAD + CAPTION_H)
    left = CELL_PAD + col * (s + CELL_PAD)
    return image[top : top + s, left : left + s]


@pytest.mark.slow
def test_run_all_writes_every_figure(run):
    out, result = run
    assert list(result["figures"]) == list(NAMES) == list(F.FIGURES)
    for name in NAMES:
        assert (out / f"{name}.png").is_file() and (out / f"{name}.json").is_file()
        record, image = _load(out, name)
        caption = record["caption"]
        for word in ("efficientnet_lite0", "tiger cat", "2 seeds x 8 steps", "fidelity default"):
            assert word in caption, (name, word)
        assert "blocks." in caption
        meta = record["meta"]
        assert (meta["model"], meta["seeds"], meta["steps"], meta["fidelity"]) == ("efficientnet_lite0", 2, 8, "default")
        assert meta["target"] == "tiger cat" and meta["layer"] == "blocks.14"
        assert image.std() > 20, name  # not blank
    summary = json.loads((out / "figures.json").read_text())
    assert set(summary["figures"]) == set(NAMES) and summary["timings"]["total_s"] > 0


@pytest.mark.slow
@pytest.mark.parametrize("name, rows, columns", [
    ("comparison", 2, 5 + TEST_SCHEDULE.nmf_factors),  # input, (a), (b)×n, (c), (d), (e); a row per seed
    ("perturbations", 3, 6),  # a row per seed + the masks; 5 perturbations + none
    ("layers", 3, 2),  # heat maps + a row per seed; a column per stage
])
def test_grid_figures_have_the_expected_size_and_content(run, name, rows, columns):
    out, _ = run
    record, image = _load(out, name)
    layout = record["layout"]
    assert (layout["rows"], layout["columns"], layout["cell"]) == (rows, columns, 224)
    width = columns * (224 + CELL_PAD) + CELL_PAD
    height = TITLE_PAD + layout["title_lines"] * TITLE_LINE + rows * (224 + CELL_PAD + CAPTION_H) + CELL_PAD
    assert image.shape == (height, width, 3)
    for r in range(rows):
        for c in range(columns):
            cell = _cell(image, layout, r, c)
            if name == "comparison" and c == 0 and r >= 2:
                continue  # the input column has blanks below the heat map
            if name == "perturbations" and r == rows - 1 and c == columns - 1:
                assert cell.std() < 1  # "none" has no mask: a blank cell
                continue
            assert cell.std() > 2, (name, r, c)  # every visualization, mask and heat map has structure


@pytest.mark.slow
def test_groups_figure(run):
    out, _ = run
    record, image = _load(out, "groups")
    groups = record["groups"]
    assert 1 <= len(groups) <= 4 and len(record["channel_groups"]["groups"]) >= len(groups)
    assert "views of this one photo" in record["caption"] and record["meta"]["views"] == ["original", "flip"]
    layout = record["layout"]
    rows, columns = 1 + TEST_SCHEDULE.seeds, 1 + len(groups)
    assert (layout["rows"], layout["columns"]) == (rows, columns)
    width = columns * (224 + CELL_PAD) + CELL_PAD
    height = TITLE_PAD + layout["title_lines"] * TITLE_LINE + rows * (224 + CELL_PAD + CAPTION_H) + CELL_PAD
    assert image.shape == (height, width, 3)
    for g in groups:
        assert len(g["pcc"]["values"]) == 2 and all(-1 <= v <= 1 for v in g["pcc"]["values"])
        assert 0 < g["beta"] <= 1 and g["channels"]
    assert -1 <= record["integral"]["pcc"]["mean"] <= 1
    assert 0 < record["r_plus_coverage"] <= 1 + 1e-6


@pytest.mark.slow
def test_spectra_numbers(run):
    out, _ = run
    record, image = _load(out, "spectra")
    assert image.shape == (round(SPECTRA_FIGSIZE[1] * SPECTRA_DPI), round(SPECTRA_FIGSIZE[0] * SPECTRA_DPI), 3)
    assert record["dc"]["constant"] == pytest.approx(0.55, rel=1e-5)
    assert max(record["profiles"]["constant"][1:]) < 1e-6 and record["slopes"]["constant"] is None
    slopes = record["slopes"]
    assert abs(slopes["gaussian"]) < 0.3  # white: flat
    assert slopes["fractal"] < -1.0  # 1/f^1.5 before the sigmoid
    assert slopes["pyramid 0"] < slopes["pyramid 5"] < 0  # level 0 smoothest, level 5 finest
    assert slopes["blur s=10"] < slopes["photo"]  # blur removes the high frequencies
    assert {f"pyramid {d}" for d in range(6)} <= set(record["names"])


@pytest.mark.slow
def test_comparison_and_perturbation_numbers(run):
    out, result = run
    record, _ = _load(out, "comparison")
    m = record["metrics"]
    assert set(m) == set("abcde")
    for col in m.values():
        assert len(col["pcc"]["values"]) == 2 and all(np.isfinite(col["pcc"]["values"]))
        assert all(-1 <= v <= 1 for v in col["pcc"]["values"]) and 0 <= col["top5_rate"] <= 1
    assert m["a"]["pcc_reference"] == "feature map" and m["e"]["pcc_reference"] == "R+"
    assert len(m["b"]["pcc_group_vs_factor"]) == TEST_SCHEDULE.nmf_factors
    assert record["class_rule"]["selected"] and 0 < record["nmf"]["relative_error"] < 1
    # The image's own feature map is what (a) maximizes: even 8 updates correlate with it.
    assert m["a"]["pcc"]["mean"] > 0.0
    pert, _ = _load(out, "perturbations")
    assert pert["columns"] == ["constant", "gaussian", "blur", "fractal", "pyramid", "none"]
    assert pert["metrics"]["none"]["mask_area"] is None
    assert all(0 < pert["metrics"][p]["mask_area"]["mean"] < 1 for p in pert["columns"][:-1])
    # Shared renders: (d) and (e) of the comparison are the perturbation figure's none and pyramid.
    assert pert["metrics"]["pyramid"]["pcc"]["values"] == pytest.approx(m["e"]["pcc"]["values"], abs=1e-6)
    assert pert["metrics"]["none"]["pcc"]["values"] == pytest.approx(m["d"]["pcc"]["values"], abs=1e-6)
    # ... and so are their PCCs with the directed attribution sign(a - b)·R+ (what the objective excites)
    for p, k in (("pyramid", "e"), ("none", "d")):
        assert all(np.isfinite(pert["metrics"][p]["pcc_directed"]["values"]))
        assert pert["metrics"][p]["pcc_directed"]["values"] == pytest.approx(m[k]["pcc_directed"]["values"], abs=1e-6)
    layers, _ = _load(out, "layers")
    assert layers["columns"] == ["blocks.0", "blocks.14"]
    assert layers["metrics"]["blocks.14"]["pcc"]["values"] == pytest.approx(m["e"]["pcc"]["values"], abs=1e-6)
    assert layers["metrics"]["blocks.14"]["pcc_directed"]["values"] == pytest.approx(
        m["e"]["pcc_directed"]["values"], abs=1e-6)


def test_figures_replace_only_their_own_files(tmp_path):
    """A file the figures would write must be an earlier figures run's (figures.json lists it, the
    runs' lists accumulate): the user's own spectra.png is refused, never replaced."""
    import json

    from attrvis_jax.apps.figures.run import _figure_files
    from attrvis_jax.errors import AttrvisError

    assert _figure_files(tmp_path, ["spectra"]) == set()  # an empty folder
    for name in ("spectra.png", "spectra.json", "layers.png"):
        (tmp_path / name).write_text(name)
    (tmp_path / "figures.json").write_text(json.dumps({"figures": {"spectra": {"png": "spectra.png",
                                                                                "json": "spectra.json"}},
                                                       "files": ["layers.png", "figures.json"]}))
    assert _figure_files(tmp_path, ["spectra", "layers"]) == {"spectra.png", "spectra.json", "layers.png",
                                                               "figures.json"}
    (tmp_path / "comparison.png").write_text("mine")
    with pytest.raises(AttrvisError, match="comparison.png is not an earlier figures run's file"):
        _figure_files(tmp_path, ["comparison"])
    (tmp_path / "figures.json").write_text("not json")
    with pytest.raises(AttrvisError, match="spectra.png is not an earlier figures run's file"):
        _figure_files(tmp_path, ["spectra"])
