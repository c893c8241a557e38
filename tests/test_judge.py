"""A second network's verdict (attrvis_jax.judge) and the channel groups of a run (issue 31): the
ranks against the judge's own logits computed here, the judge's preprocessing, a verdict taken from
the saved PNG equal to a fresh one, the classes check; the whole and its groups as one render; a run
and a sweep with both on the tiny networks of tests/tiny.py (toy sizes: compiling is the cost)."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from attrvis_jax.config import AttributionConfig, RenderConfig, RunOptions, SweepConfig
from attrvis_jax.data import network_input, sample_image
from attrvis_jax.errors import AttrvisError
from attrvis_jax.judge import as_saved, check_judge, judge_inputs, judge_pictures, named_classes
from attrvis_jax.labels import pad_labels
from attrvis_jax.pictures import png_bytes
from tiny import JUDGE_SIZE, SIZE, tiny_judge, tiny_model

TINY = Path(__file__).with_name("tiny.py")
ATTRIBUTION = AttributionConfig(spatial_steps=2, channel_steps=2, steps=4)


def _rank(logits, target):
    """How many classes score above the target: argsort, independently of metrics.target_rank."""
    order = list(np.argsort(-np.asarray(logits, np.float64), kind="stable"))
    return order.index(target)


@pytest.fixture(scope="module")
def nets():
    return tiny_model(), tiny_judge()


def test_ranks_are_the_judges_own_through_its_preprocessing(nets):
    model, judge = nets
    rng = np.random.default_rng(0)
    pictures = rng.uniform(0, 1, (3, SIZE, SIZE, 3)).astype(np.float32)
    photo = sample_image("coffee")
    verdict = judge_pictures(judge, pictures, 4, photo=photo, gray=0.55, model=model)

    # The judge sees each picture as its PNG holds it, resized and cropped its own way (32 -> 44 -> 40).
    seen = np.stack([network_input(np.asarray(Image.open(io.BytesIO(png_bytes(p)))), judge.spec.preprocess)
                     for p in pictures])
    assert seen.shape == (3, JUDGE_SIZE, JUDGE_SIZE, 3)
    np.testing.assert_array_equal(judge_inputs(judge, as_saved(pictures)), seen)
    logits = np.asarray(judge.logits(seen))
    assert list(verdict.rank) == [_rank(row, 4) for row in logits]
    assert list(verdict.top) == [int(np.argmax(row)) for row in logits]
    assert verdict.photo_rank == _rank(judge.logits(judge.load_image(photo)), 4)
    assert verdict.gray_rank == _rank(judge.logits(np.full((JUDGE_SIZE,) * 2 + (3,), 0.55, np.float32)), 4)
    assert list(verdict.top5) == [r < 5 for r in verdict.rank] and not verdict.same_model
    record = verdict.to_dict()
    assert record["judge"] == "tiny_judge" and record["judge_rank"] == [int(r) for r in verdict.rank]

    # From the saved files: the same verdict (uint8 pictures are read as the PNG's values).
    saved = np.stack([np.asarray(Image.open(io.BytesIO(png_bytes(p)))) for p in pictures])
    again = judge_pictures(judge, saved, 4, photo=photo, gray=0.55)
    assert list(again.rank) == list(verdict.rank) and again.photo_rank == verdict.photo_rank

    # The network judging itself is allowed, and said.
    assert judge_pictures(model, pictures, 4, model=model).same_model


def test_a_judge_of_other_classes_is_refused(nets):
    model, judge = nets
    check_judge(model, judge)
    other = dataclasses.replace(judge, labels=tuple("abcdefghij"))
    with pytest.raises(AttrvisError, match=r"the judge tiny_judge has other classes than tiny \(class 0 is 'a' there, "
                                           r"'0' in tiny\): a judge must give every class the same index"):
        check_judge(model, other)
    fewer = dataclasses.replace(judge, labels=tuple("0123"))
    with pytest.raises(AttrvisError, match=r"\(4 classes, tiny has 10\)"):
        judge_pictures(fewer, np.zeros((1, SIZE, SIZE, 3)), 1, model=model)
    # Unnamed logits beyond the names (InceptionV1's 1008 for 1001 names) are not classes.
    assert named_classes(dataclasses.replace(judge, labels=pad_labels(tuple(judge.labels), 12))) == judge.labels
    with pytest.raises(AttrvisError, match="class 10 is not one of the judge tiny_judge's 10 classes"):
        judge_pictures(judge, np.zeros((1, SIZE, SIZE, 3)), 10)


def test_the_whole_renders_in_one_batch_with_its_groups(nets):
    """visualize_groups(together=True): one render of [whole, *groups] per seed. With a constant
    background nothing random depends on the batch (the init is aligned, transforms shared), so the
    whole is the render it would be alone (and so is each group: not rendered again here, the
    compiles are this test's cost); the members' masks aim at their own β."""
    from attrvis_jax.attribution import attribute
    from attrvis_jax.groups import ChannelGroups, member, visualize_groups
    from attrvis_jax.render import visualize

    from attrvis_jax.metrics import evaluate_visualizations

    model, judge = nets
    attr = attribute(model, model.load_image(sample_image("chelsea")), "conv2", config=ATTRIBUTION)
    k = attr.values.shape[-1]
    grouping = ChannelGroups(groups=(np.arange(0, k, 2), np.arange(1, k, 2)), n_factors=2, explained_variance={2: 1.0},
                             loadings=np.zeros((2, k)), layer="conv2", channels=k)
    config = RenderConfig(steps=3, perturbation="constant")
    run = RunOptions(seeds=2, chunk_size=3, snapshot_steps=())
    key = jax.random.key(3)
    shown = visualize_groups(model, attr, grouping, config, key, options=run, together=True)
    assert shown.integral.composed.shape == (2, SIZE, SIZE, 3) and not shown.integral.grouped
    assert shown.groups.composed.shape == (2, len(shown.parts), SIZE, SIZE, 3) and shown.groups.grouped
    alone = visualize(model, attr, config, key, options=run)
    np.testing.assert_allclose(shown.integral.images, alone.images, atol=1e-5)
    assert np.abs(shown.groups.images - shown.integral.images[:, None]).max() > 0.01  # the groups are not the whole
    np.testing.assert_allclose(shown.groups.beta, [p["beta"] for p in shown.parts])
    assert float(shown.integral.beta) == pytest.approx(attr.beta)
    with pytest.raises(AttrvisError, match="takes a grouped render"):
        member(alone, 0)

    # judge= in the library's evaluation: the verdict on the composed pictures, the photo as the
    # network saw it and the render's gray
    measured = evaluate_visualizations(model, attr, alone, judge=judge)
    verdict = judge_pictures(judge, alone.composed, attr.target, photo=attr.image, gray=config.background)
    assert list(measured.judge.rank) == list(verdict.rank) and measured.judge.photo_rank == verdict.photo_rank
    assert measured.summary()["judge_top5_rate"] == float(np.mean(verdict.top5))
    with pytest.raises(AttrvisError, match="has other classes"):
        evaluate_visualizations(model, attr, alone, judge=dataclasses.replace(judge, labels=tuple("abcdefghij")))


def test_group_metrics_and_top_channels_against_a_reference(nets):
    from attrvis_jax.attribution import attribute
    from attrvis_jax.groups import ChannelGroups, group_metrics, split_attribution, top_channels
    from attrvis_jax.metrics import pearson_rows

    model, _ = nets
    attr = attribute(model, model.load_image(sample_image("coffee")), "conv2", config=ATTRIBUTION)
    k = attr.values.shape[-1]
    grouping = ChannelGroups(groups=(np.arange(0, k // 2), np.arange(k // 2, k)), n_factors=2,
                             explained_variance={2: 1.0}, loadings=np.zeros((2, k)), layer="conv2", channels=k)
    parts = split_attribution(attr, grouping)
    pictures = np.random.default_rng(1).uniform(0, 1, (2, len(parts), SIZE, SIZE, 3)).astype(np.float32)
    got = group_metrics(model, pictures, parts, attr)
    for j, part in enumerate(parts):
        acts = np.asarray(model.features(pictures[:, j], "conv2"))
        np.testing.assert_allclose(got["pcc"][:, j], pearson_rows(acts, part["positive"]), atol=1e-5)
        logits = np.asarray(model.logits(pictures[:, j]))
        assert list(got["target_rank"][:, j]) == [_rank(row, attr.target) for row in logits]
    total = float(attr.positive.sum())
    for part in parts:
        top = top_channels(part, total, 3)
        per_channel = attr.positive.sum(axis=(0, 1))
        expected = sorted((c for c in part["channels"] if per_channel[c] > 0), key=lambda c: -per_channel[c])[:3]
        assert [t["channel"] for t in top] == [int(c) for c in expected]
        assert [t["share"] for t in top] == pytest.approx([per_channel[c] / total for c in expected], rel=1e-5)


def test_a_run_with_a_judge_and_groups(nets, tmp_path):
    """pipeline.run: results.json and the report carry the judge's verdict and the groups, every
    file it lists is there (and no other), the groups' pictures are the ones saved."""
    from attrvis_jax.apps.pipeline import run

    model, judge = nets
    results = run(model, "chelsea", tmp_path / "out", layer="conv2", attribution_config=ATTRIBUTION,
                  render_config=RenderConfig(steps=2, perturbation="constant"),
                  run_options=RunOptions(seeds=2, chunk_size=2, snapshot_steps=()), judge=judge, groups=2, quiet=True)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(results["files"])
    assert json.loads((out / "results.json").read_text())["groups"] == results["groups"]
    assert results["judge"] == "tiny_judge" and not results["judge_same_model"]
    assert len(results["judge_rank"]) == 2 and results["judge_top5"] == [r < 5 for r in results["judge_rank"]]
    saved = np.stack([np.asarray(Image.open(out / f"seed0{i}.png")) for i in range(2)])
    assert list(judge_pictures(judge, saved, results["target_index"]).rank) == results["judge_rank"]

    g = results["groups"]
    assert g["source"] == "views" and g["requested"] == 2 and 1 <= len(g["groups"]) <= 2
    channels = [c for e in g["groups"] for c in e["channels"]]
    assert len(channels) == len(set(channels)) and all(0 <= c < 16 for c in channels)
    assert g["r_plus_coverage"] == pytest.approx(sum(e["share_of_r_plus"] for e in g["groups"])) and \
        0 < g["r_plus_coverage"] <= 1 + 1e-6
    for e in g["groups"]:
        assert len(e["pcc"]) == len(e["judge_rank"]) == len(e["images"]) == 2
        pictures = np.stack([np.asarray(Image.open(out / name)) for name in e["images"]])
        assert list(judge_pictures(judge, pictures, results["target_index"]).rank) == e["judge_rank"]
    page = (out / "report.html").read_text()
    assert "A second network&#x27;s verdict" in page or "A second network's verdict" in page
    assert "Channel groups" in page and 'src="group1_heatmap.png"' in page and 'src="seed01_group1.png"' in page


def test_a_sweep_judged_later_equals_one_judged_from_the_start(nets, tmp_path):
    """A judge added when a sweep resumes judges its stored items from their saved pictures (nothing
    is rendered again): the same verdicts as a sweep that had the judge from the start. Groups ride
    along: each item's groups are recorded, pictured and judged too."""
    from attrvis_jax.apps.sweep import run_sweep

    model, _ = nets
    spec = dict(images=("sample:chelsea",), layers=("conv2",), perturbations=("constant",), seeds=2, batch=2,
                groups=2, attribution=ATTRIBUTION, render=RenderConfig(steps=2), chunk_size=2)
    judge = f"{TINY}:tiny_judge"
    first = run_sweep(SweepConfig(**spec), tmp_path / "later", model=model)
    assert first.ran == 2 and all(row["judge"] is None and row["groups"] for row in first.rows)
    later = run_sweep(SweepConfig(**spec, judge=judge), tmp_path / "later", model=model)
    assert later.ran == 0
    fresh = run_sweep(SweepConfig(**spec, judge=judge), tmp_path / "fresh", model=model)
    verdict = lambda rows: [(row["judge_rank"], row["judge_photo_rank"], row["judge_gray_rank"],  # noqa: E731
                             [g["judge_rank"] for g in row["groups"]]) for row in rows]
    assert verdict(later.rows) == verdict(fresh.rows)
    assert all(row["judge"] == judge for row in later.rows)
    assert later.summary[0]["judged"] == 2 and later.summary[0]["judge_top5_rate"] == fresh.summary[0]["judge_top5_rate"]
    for row in fresh.rows:
        assert all((tmp_path / "fresh" / g["picture"]).is_file() for g in row["groups"])


def test_the_ablation_ranks_by_the_judge_lower_ranks_first():
    from attrvis_jax.apps.ablation import rank

    nan = float("nan")
    row = lambda p, top5, median: {"layer": "l", "perturbation": p, "pcc_mean": 0.1, "pcc_directed_mean": 0.1,  # noqa: E731
                                   "top5_rate": 0.5, "judge_top5_rate": top5, "judge_rank_median": median}
    table = [row("none", 0.0, nan), row("constant", 0.5, 40.0), row("pyramid", 1.0, 3.0), row("blur", 0.5, 7.0)]
    ranking = rank(table, judged=True)["l"]
    assert ranking["judge_rank_median"] == ["pyramid", "blur", "constant", "none"]
    assert ranking["judge_top5_rate"] == ["pyramid", "constant", "blur", "none"]
    assert "judge_top5_rate" not in rank(table)["l"]
