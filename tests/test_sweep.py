"""Sweeps: the plan, the store, sharding over forced CPU devices, resuming after SIGKILL, ablation.

One small sweep (2 photos × 1 layer × 2 perturbations × 3 seeds, a few steps) runs in-process and is
the reference; other runs copy its saved attributions so that only the rendering is repeated.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from PIL import Image

from attrvis_jax.config import AttributionConfig, RenderConfig, SweepConfig
from attrvis_jax.errors import AttrvisError

pytestmark = pytest.mark.slow

CONFIG = SweepConfig(
    images=("sample:chelsea", "sample:coffee"), targets=("top1",), layers=("blocks.1",),
    perturbations=("pyramid", "constant"), seeds=3, batch=4, key=7,
    attribution=AttributionConfig(spatial_steps=8, channel_steps=8, steps=8),
    render=RenderConfig(steps=3), chunk_size=3,
)
NUMERIC = ("pcc", "pcc_raw", "mask_area", "final_loss")


def _write_spec(path: Path, config: SweepConfig) -> Path:
    path.write_text(json.dumps(config.to_dict()))
    return path


def _cli(args, devices: int = 1, **kwargs):
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")
    return subprocess.Popen([sys.executable, "-m", "attrvis_jax.apps.cli", *args], env=env, **kwargs)


def _seeded(tmp: Path, reference: Path) -> Path:
    """A fresh output folder holding the reference run's attributions (so only rendering reruns)."""
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copytree(reference / "attributions", tmp / "attributions")
    return tmp


def _assert_rows_close(rows, reference, atol=2e-3):
    ref = {r["id"]: r for r in reference}
    for row in rows:
        base = ref[row["id"]]
        for k in NUMERIC:
            assert abs(row[k] - base[k]) <= atol * max(1.0, abs(base[k])), (row["id"], k, row[k], base[k])
        assert row["top5_hit"] == base["top5_hit"] and row["target_index"] == base["target_index"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, lite0):
    from attrvis_jax.apps.sweep import run_sweep

    out = tmp_path_factory.mktemp("sweep-ref")
    result = run_sweep(CONFIG, out, model=lite0)
    return out, result


# ---- the reference run -------------------------------------------------------------------------------
def test_sweep_records_every_item_once(reference):
    out, result = reference
    ids = [r["id"] for r in result.rows]
    assert len(ids) == 2 * 2 * 3 == len(set(ids)) and result.ran == 12
    assert {r["perturbation"] for r in result.rows} == {"pyramid", "constant"}
    assert {r["seed"] for r in result.rows} == {0, 1, 2}
    # plan order (images, layers, perturbations as listed, seeds), not the store's id order
    assert [(r["image"], r["perturbation"], r["seed"]) for r in result.rows] == [
        (image, pert, seed) for image in ("sample:chelsea", "sample:coffee") for pert in CONFIG.perturbations
        for seed in range(3)]
    for r in result.rows:
        assert r["finite"] and np.isfinite(r["pcc"]) and -1 <= r["pcc"] <= 1
        assert r["target_name"] == ("tiger cat" if "chelsea" in r["image"] else "espresso")
        img = np.asarray(Image.open(out / r["picture"]))
        assert img.shape == (224, 224, 3) and img.std() > 0
    csv_lines = (out / "results.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 13 and csv_lines[0].startswith("id,image,label,target")
    summary = {(s["layer"], s["perturbation"]): s for s in result.summary}
    assert set(summary) == {("blocks.1", "pyramid"), ("blocks.1", "constant")}
    for (layer, pert), s in summary.items():
        members = [r for r in result.rows if r["perturbation"] == pert]
        assert s["n"] == 6
        assert s["top5_rate"] == pytest.approx(np.mean([r["top5_hit"] for r in members]))
    assert json.loads((out / "sweep.json").read_text())["seeds"] == 3
    assert len(list((out / "attributions").glob("*.npz"))) == 2


def test_rerun_does_nothing_and_returns_the_same_rows(reference, lite0):
    from attrvis_jax.apps.sweep import run_sweep

    out, result = reference
    again = run_sweep(CONFIG, out, model=lite0)
    assert again.ran == 0
    assert again.rows == result.rows


def test_an_item_is_that_seed_of_visualize(reference, lite0):
    """Seed s of an item equals visualize(key=fold_in(unit key, 1), seed_ids=[s]) on one device."""
    from attrvis_jax.attribution import Attribution
    from attrvis_jax.render import visualize
    from attrvis_jax.apps.report import to_uint8
    from attrvis_jax.apps.sources import resolve_sources
    from attrvis_jax.apps.sweep import Unit, unit_key

    out, result = reference
    row = next(r for r in result.rows if r["image"] == "sample:coffee" and r["perturbation"] == "constant"
               and r["seed"] == 2)
    unit = Unit(resolve_sources(["sample:coffee"])[0], "top1", "blocks.1")
    attr = Attribution.load(out / "attributions" / f"{unit.slug}.npz")
    vis = visualize(lite0, attr, CONFIG.render.replace(perturbation="constant"),
                    key=jax.random.fold_in(unit_key(CONFIG, unit), 1), seed_ids=[2])
    saved = np.asarray(Image.open(out / row["picture"])).astype(int)
    assert np.abs(saved - to_uint8(vis.composed[0]).astype(int)).max() <= 1
    assert float(vis.loss[0]) == pytest.approx(row["final_loss"], rel=1e-4)


# ---- sharding and resuming ---------------------------------------------------------------------------
def test_four_devices_give_the_one_device_results(reference, tmp_path):
    ref_out, ref = reference
    out = _seeded(tmp_path / "four", ref_out)
    config = CONFIG.replace(perturbations=("constant",))  # one compilation is enough to show it
    spec = _write_spec(tmp_path / "spec.json", config)
    proc = _cli(["sweep", str(spec), "--out", str(out), "--quiet"], devices=4,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-2000:]
    data = json.loads((out / "results.json").read_text())
    session = data["this_session"]
    assert session["devices"] == 4 and session["devices_used"] == 4  # the batch really was split
    assert session["attribution_s"] < 5  # attributions were loaded, not recomputed
    assert [r["id"] for r in data["items"]] == [r["id"] for r in ref.rows if r["perturbation"] == "constant"]
    _assert_rows_close(data["items"], ref.rows)


def test_resume_after_sigkill_loses_and_repeats_nothing(reference, tmp_path, lite0):
    from attrvis_jax.apps.sweep import run_sweep

    ref_out, ref = reference
    config = CONFIG.replace(seeds=8, perturbations=("pyramid",))  # 16 items in 4 batches
    out = _seeded(tmp_path / "killed", ref_out)
    spec = _write_spec(tmp_path / "spec.json", config)
    proc = _cli(["sweep", str(spec), "--out", str(out), "--quiet"], devices=2,
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    db = out / "store.sqlite"
    finished: list = []
    deadline = time.time() + 600
    try:
        while time.time() < deadline and proc.poll() is None:
            if db.exists():
                try:
                    with sqlite3.connect(db, timeout=1) as con:
                        finished = con.execute("SELECT id, finished_at FROM items").fetchall()
                except sqlite3.OperationalError:  # the table may not exist yet
                    finished = []
                if finished:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "the sweep ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
        # a second sweep into the folder is refused at once, naming the running one
        t0 = time.perf_counter()
        with pytest.raises(AttrvisError, match=f"is in use by another sweep \\(pid {proc.pid} on "):
            run_sweep(config, out, model=lite0)
        assert time.perf_counter() - t0 < 5
        proc.send_signal(signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(db) as con:
        before = dict(con.execute("SELECT id, finished_at FROM items").fetchall())
    assert (out / "sweep.lock").exists()  # kill -9 left the file, but not the lock: resuming is not refused
    assert 1 <= len(before) < 16

    result = run_sweep(config, out, model=lite0)  # resume, on one device this time
    assert result.ran == 16 - len(before)
    ids = [r["id"] for r in result.rows]
    assert len(ids) == len(set(ids)) == 16
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT COUNT(*), COUNT(DISTINCT id) FROM items").fetchone() == (16, 16)
        after = dict(con.execute("SELECT id, finished_at FROM items").fetchall())
    assert all(after[i] == t for i, t in before.items())  # finished items were not redone
    assert len((out / "results.csv").read_text().strip().splitlines()) == 17
    # Same keys, same numbers: the items the reference run also has agree with it.
    _assert_rows_close([r for r in result.rows if r["seed"] < 3], ref.rows)
    for r in result.rows:
        assert (out / r["picture"]).exists()


# ---- ablation and the command --------------------------------------------------------------------------
def test_ablation_table_ranking_and_charts(reference, tmp_path, lite0):
    from attrvis_jax.apps.ablation import SHEET_SIDE, ablation_config, run_ablation

    ref_out, _ = reference
    out = _seeded(tmp_path / "ablation", ref_out)
    config = ablation_config(images=CONFIG.images, layers=CONFIG.layers, seeds=2, perturbations=("pyramid", "none"))
    config = config.replace(attribution=CONFIG.attribution, render=CONFIG.render, key=CONFIG.key, batch=4)
    result = run_ablation(config, out, model=lite0)
    assert [r["perturbation"] for r in result.table] == ["none", "pyramid"]  # the paper's order
    assert [r["name"] for r in result.table] == ["No-mask", "NoisePyramid"]
    ranks = result.ranking["blocks.1"]
    by_pcc = sorted(result.table, key=lambda r: -r["pcc_mean"])
    assert ranks["pcc_mean"] == [r["perturbation"] for r in by_pcc]
    by_directed = sorted(result.table, key=lambda r: -r["pcc_directed_mean"])
    assert ranks["pcc_directed_mean"] == [r["perturbation"] for r in by_directed]
    for stem in ("ablation_pcc", "ablation_pcc_directed", "ablation_top5"):
        img = np.asarray(Image.open(out / f"{stem}.png").convert("L"), float)
        assert img.shape[0] > 200 and img.std() > 10
    saved = json.loads((out / "ablation.json").read_text())
    assert saved["items"] == 8 and saved["ranking"] == result.ranking
    assert (out / "ablation.csv").read_text().startswith("name,layer,perturbation")
    # the pictures beside the numbers: a row per image x seed, a column per perturbation (paper's order)
    sheet = np.asarray(Image.open(out / "ablation_sheet_blocks.1.png").convert("RGB"))
    assert result.files["sheet blocks.1"] == out / "ablation_sheet_blocks.1.png"
    rows = result.sweep.rows
    lines = list(dict.fromkeys((r["image"], r["target_index"], r["seed"]) for r in rows))
    cell = {(r["image"], r["target_index"], r["seed"], r["perturbation"]): r for r in rows}
    pad, caption = 6, 16
    for i, line in enumerate(lines):
        for j, pert in enumerate(("none", "pyramid")):
            with Image.open(out / cell[(*line, pert)]["picture"]) as img:
                img = img.convert("RGB")
            img.thumbnail((SHEET_SIDE, SHEET_SIDE))  # saved at the render size, shown at most this big
            picture = np.asarray(img)
            h, w = picture.shape[:2]
            y, x = pad + i * (h + pad + caption), pad + j * (w + pad)
            np.testing.assert_array_equal(sheet[y : y + h, x : x + w], picture)
    assert sheet.shape == (len(lines) * (h + pad + caption) + pad, 2 * (w + pad) + pad, 3)


def test_sweep_command_resumes_and_prints_the_table(reference, tmp_path, capsys):
    from attrvis_jax.apps.cli import main

    ref_out, _ = reference
    spec = tmp_path / "spec.toml"
    spec.write_text('images = ["sample:chelsea"]\nlayers = ["blocks.1"]\nperturbations = ["pyramid"]\n'
                    'seeds = 4\nbatch = 100000\nkey = 7\nchunk_size = 3\n[render]\nsteps = 3\n'
                    '[attribution]\nspatial_steps = 8\nchannel_steps = 8\nsteps = 8\n')
    out = _seeded(tmp_path / "cli", ref_out)
    # batch 100000: never padded past the 4 items of the group (nor refused for 100000 renders' memory)
    assert main(["sweep", str(spec), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "blocks.1" in printed and "pyramid" in printed and "4 items" in printed
    assert main(["sweep", str(spec), "--out", str(out)]) == 0
    assert "4 already done" in capsys.readouterr().out


def test_sweep_command_errors_are_one_line(tmp_path, capsys):
    from attrvis_jax.apps.cli import main

    bad = tmp_path / "bad.json"
    bad.write_text('{"images": ["sample:chelsea"], "seedz": 3}')
    assert main(["sweep", str(bad), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert "unknown sweep field(s) ['seedz']" in err and len(err.strip().splitlines()) == 1
    assert main(["sweep", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o")]) == 1
    assert "cannot read the sweep spec" in capsys.readouterr().err
    broken = tmp_path / "broken.toml"
    broken.write_text("images = [")
    assert main(["sweep", str(broken), "--out", str(tmp_path / "o")]) == 1
    assert "not a valid toml sweep spec" in capsys.readouterr().err


# ---- pieces ------------------------------------------------------------------------------------------
def test_store_refuses_other_settings_and_writes_batches_atomically(tmp_path):
    from attrvis_jax.apps.store import NAMES, ResultStore

    row = {name: 0 for name in NAMES if name not in ("session", "finished_at")}
    with ResultStore(tmp_path / "s.sqlite", {"a": 1}) as store:
        store.add([dict(row, id="x", finite=True), dict(row, id="y")])
        bad = dict(row, id="z")
        del bad["pcc"]
        with pytest.raises(KeyError):
            store.add([dict(row, id="w"), bad])  # one bad row: the whole batch is refused
        with pytest.raises(sqlite3.IntegrityError):
            store.add([dict(row, id="v"), dict(row, id="x")])  # a duplicate: nothing of the batch lands
        assert store.done() == {"x", "y"}
        assert store.rows()[0]["finite"] is True and store.rows()[1]["finite"] is False
    with ResultStore(tmp_path / "s.sqlite", {"a": 1}) as store:
        assert store.session == 2 and store.done() == {"x", "y"}
    with pytest.raises(AttrvisError, match="other settings \\(a differ\\)"):
        ResultStore(tmp_path / "s.sqlite", {"a": 2})


def test_a_store_from_before_run_options_resumes(tmp_path):
    """Stores written before RunOptions also pinned render.engine, and stores from before
    compute_dtype had none (they ran float32): they are resumed, not refused."""
    from attrvis_jax.apps.store import ResultStore
    from attrvis_jax.apps.sweep import fingerprint, upgrade_fingerprint

    now = fingerprint(CONFIG)
    old = {**now, "render": {**{k: v for k, v in now["render"].items() if k != "compute_dtype"}, "engine": "scan"}}
    assert upgrade_fingerprint(old) == now
    bf16 = fingerprint(CONFIG.replace(render=CONFIG.render.replace(compute_dtype="bfloat16")))
    assert upgrade_fingerprint(bf16) == bf16 != now  # a bfloat16 sweep is another sweep
    with ResultStore(tmp_path / "s.sqlite", old) as store:
        store.add([_store_row("x")])  # an item: the settings are pinned
    ResultStore(tmp_path / "s.sqlite", now, upgrade=upgrade_fingerprint).close()  # upgraded in place
    ResultStore(tmp_path / "s.sqlite", now).close()  # and from then on it is the new form
    with pytest.raises(AttrvisError, match="other settings \\(render.steps differ\\)"):
        other = {**now, "render": {**now["render"], "steps": 99}}
        ResultStore(tmp_path / "s.sqlite", other, upgrade=upgrade_fingerprint)


def test_spec_files_and_plan(tmp_path, lite0):
    from attrvis_jax.apps.sources import resolve_sources
    from attrvis_jax.apps.sweep import fingerprint, load_spec, plan, summarize

    toml = tmp_path / "s.toml"
    toml.write_text('images = ["chelsea"]\nlayers = ["default", "stage3"]\nperturbations = ["NoisePyramid", "none"]\n'
                    "seeds = 2\n[render]\nsteps = 5\n")
    config = load_spec(toml)
    assert config.perturbations == ("pyramid", "none") and config.render.steps == 5
    units, items = plan(config, resolve_sources(config.images), lite0)
    assert [u.layer for u in units] == [lite0.resolve_layer(lite0.spec.default_layer), lite0.resolve_layer("stage3")]
    assert len(items) == 2 * 2 * 2 and len({i.id for i in items}) == 8
    assert len({u.slug for u in units}) == 2
    # Seeds, perturbations and chunking may change between runs; the settings of a result may not.
    assert fingerprint(config) == fingerprint(config.replace(seeds=9, perturbations=("blur",)))
    assert fingerprint(config) == fingerprint(config.replace(chunk_size=7, engine="loop"))  # how it runs
    with pytest.raises(AttrvisError, match="moved out of"):
        SweepConfig.from_dict({"render": {"chunk_size": 4}})
    assert fingerprint(config) != fingerprint(config.replace(render=config.render.replace(steps=6)))
    # the render's balance is part of a result: a store made under another one is not resumed
    assert fingerprint(config) != fingerprint(config.replace(render=config.render.replace(area_weight=3.0)))
    assert fingerprint(config) != fingerprint(config.replace(render=config.render.replace(fidelity="code")))
    with pytest.raises(AttrvisError, match="unknown render field"):
        SweepConfig.from_dict({"render": {"stepz": 1}})
    with pytest.raises(AttrvisError, match="perturbations repeat"):
        SweepConfig(perturbations=("pyramid", "NoisePyramid"))
    with pytest.raises(AttrvisError, match="same layer twice"):
        plan(SweepConfig(layers=("default", lite0.resolve_layer(lite0.spec.default_layer))), resolve_sources(["chelsea"]), lite0)
    # The summary averages seeds per image first, then images (the paper's order of averaging).
    rows = [dict(layer="l", perturbation="p", image=img, target="t", pcc=v, pcc_raw=0.0, top5_hit=h,
                 mask_area=0.1, beta=0.1, finite=True)
            for img, v, h in [("a", 0.2, True), ("a", 0.4, True), ("a", 0.6, False), ("b", 0.0, False)]]
    (s,) = summarize(rows)
    assert s["pcc_mean"] == pytest.approx((0.4 + 0.0) / 2) and s["top5_rate"] == 0.5 and s["n"] == 4


# ---- issue 28: one sweep per folder, Ctrl-C, the cluster, what results pin ------------------------------
def _store_row(item_id):
    from attrvis_jax.apps.store import NAMES

    return {**{name: 0 for name in NAMES if name not in ("session", "finished_at")}, "id": item_id}


TINY = CONFIG.replace(images=("sample:chelsea",), weights="random", perturbations=("pyramid",), seeds=1, batch=1,
                      attribution=AttributionConfig(spatial_steps=1, channel_steps=1, steps=2),
                      render=RenderConfig(steps=1))


def test_a_lock_dies_with_its_holder_and_ablation_takes_it_too(tmp_path):
    """A folder held by a live process is refused at once, naming it, by sweeps and ablations;
    once the holder is killed (-9) the folder is free: no stale lock."""
    from attrvis_jax.apps.ablation import run_ablation
    from attrvis_jax.apps.sweep import run_sweep
    from attrvis_jax.apps.sweepdir import FolderLock

    out = tmp_path / "held"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\n"
                               "from attrvis_jax.apps.sweepdir import FolderLock\n"
                               "FolderLock(sys.argv[1]); print('locked', flush=True); time.sleep(600)", str(out)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "locked\n"
        for run in (run_sweep, run_ablation):
            t0 = time.perf_counter()
            with pytest.raises(AttrvisError, match=f"in use by another sweep \\(pid {holder.pid} on .*, started "
                                                   f"20.*; lock file sweep.lock\\): wait for it"):
                run(TINY, out)
            assert time.perf_counter() - t0 < 2  # before anything loads
        assert sorted(p.name for p in out.iterdir()) == ["sweep.lock"]
    finally:
        holder.kill()
        holder.wait()
    lock = FolderLock(out)  # the kernel dropped the dead holder's lock
    lock.release(undo=True)
    assert list(out.iterdir()) == []  # released: the lock file is gone (the folder was not this lock's)


def test_ctrl_c_stops_at_a_safe_point():
    """Inside `deferred`, the first SIGINT waits for a checkpoint; the second raises at once."""
    from attrvis_jax.apps import interrupt

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a foreground command
    try:
        with pytest.raises(KeyboardInterrupt):
            with interrupt.deferred() as checkpoint:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                reached = True  # not interrupted in between
                checkpoint.wrap(lambda done, total: None)(1, 2)
                reached = False
        assert reached
        with pytest.raises(KeyboardInterrupt):
            with interrupt.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                os.kill(os.getpid(), signal.SIGINT)  # the second one: at once
                time.sleep(0.05)
                pytest.fail("a second Ctrl-C must stop at once")
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    finally:
        signal.signal(signal.SIGINT, previous)


def test_sigint_exits_130_with_the_store_intact(tmp_path):
    """Ctrl-C while the sweep sets up (model, plan, checks) and while it renders: each time one line,
    exit 130, a store that passes SQLite's integrity check, every recorded picture on disk, no temp
    file and no lock left. (An interrupt while Python still imports the package is Python's own.)"""
    spec = _write_spec(tmp_path / "spec.json", TINY.replace(seeds=6, perturbations=("pyramid", "constant"), batch=2))
    for moment in ("locked", "stored"):
        out = tmp_path / moment
        # the command as a terminal starts it: Ctrl-C raises (a background shell would have it ignored)
        proc = subprocess.Popen(
            [sys.executable, "-c", "import runpy, signal, sys\n"
             "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
             "sys.argv[0] = 'attrvis'\n"
             "runpy.run_module('attrvis_jax.apps.cli', run_name='__main__')",
             "sweep", str(spec), "--out", str(out), "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if moment == "locked" and (out / "sweep.lock").exists():
                break
            if moment == "stored" and (out / "store.sqlite").exists():
                with sqlite3.connect(out / "store.sqlite", timeout=5) as con:
                    if con.execute("SELECT name FROM sqlite_master WHERE name = 'items'").fetchone() and \
                            con.execute("SELECT COUNT(*) FROM items").fetchone()[0]:
                        break
            time.sleep(0.02)
        assert proc.poll() is None, f"{moment}: the sweep ended before the interrupt"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, (moment, proc.returncode, err[-3000:])
        assert err == "attrvis: interrupted; rerun the same command to resume\n", (moment, err[-3000:])
        assert not (out / "sweep.lock").exists()
        if (out / "store.sqlite").exists():
            with sqlite3.connect(out / "store.sqlite") as con:
                assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                pictures = [r for (r,) in con.execute("SELECT picture FROM items")]
            assert all((out / p).exists() for p in pictures) and (moment != "stored" or pictures)
        if out.exists():
            assert not [p for p in out.rglob("*.tmp")], moment


def test_distributed_without_a_cluster_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLURM_", "OMPI_", "JAX_COORDINATOR", "KUBERNETES_", "TPU_", "CLOUD_TPU"))}
    spec = _write_spec(tmp_path / "spec.json", TINY)
    proc = subprocess.run([sys.executable, "-m", "attrvis_jax.apps.cli", "sweep", str(spec), "--out",
                           str(tmp_path / "o"), "--distributed"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith("attrvis: error: --distributed: no cluster found (jax.distributed.initialize: "
                                  "coordinator_address should be defined.); it looks for SLURM") and \
        proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "o").exists()


def test_a_sweep_that_cannot_fit_on_the_disk_is_refused(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from attrvis_jax.apps import sweep

    monkeypatch.setattr(sweep.shutil, "disk_usage", lambda path: SimpleNamespace(free=300_000))
    with pytest.raises(AttrvisError, match=r"the sweep needs about 1 MB on disk \(1 items to store, 1 x 2 pictures "
                                           r"of 224x224, 1 attributions\), more than the 0 MB free at .*; free space, "
                                           r"set save_images = false"):
        sweep.run_sweep(TINY, tmp_path / "full" / "out")
    assert not (tmp_path / "full").exists()  # refused: the folders the lock made are gone again


def test_results_pin_settings_and_attempts_do_not(tmp_path):
    """A store or sweep.json pins the settings once the folder holds results: every setting with
    items or pictures, the attribution's with attributions, none without any (a failed first session)."""
    from attrvis_jax.apps.store import ResultStore
    from attrvis_jax.apps.sweep import _check_folder, fingerprint

    other = TINY.replace(key=8, render=RenderConfig(steps=2))
    with ResultStore(tmp_path / "s.sqlite", fingerprint(other)):
        pass
    with ResultStore(tmp_path / "s.sqlite", fingerprint(TINY)) as store:  # empty: pins nothing
        store.add([_store_row("a")])
    with pytest.raises(AttrvisError, match="other settings \\(key differ\\)"):
        ResultStore(tmp_path / "s.sqlite", fingerprint(TINY.replace(key=9)))

    folder = tmp_path / "f"
    folder.mkdir()
    (folder / "sweep.json").write_text(json.dumps(other.to_dict()))
    _check_folder(folder, TINY, None, 0)  # nothing of `other` here
    (folder / "attributions").mkdir()
    (folder / "attributions" / "u.npz").write_bytes(b"")
    with pytest.raises(AttrvisError, match="\\(key differ; recorded in sweep.json"):
        _check_folder(folder, TINY, None, 0)  # the key made the attributions; render.steps did not
    _check_folder(folder, other.replace(render=TINY.render), None, 0)
    (folder / "images").mkdir()
    (folder / "images" / "p.png").write_bytes(b"")
    with pytest.raises(AttrvisError, match="\\(render.steps differ; recorded"):
        _check_folder(folder, other.replace(render=TINY.render), None, 0)
    with pytest.raises(AttrvisError, match="\\(key, render.steps differ\\)"):
        _check_folder(folder, TINY, fingerprint(other), 1)  # the store's record comes first
