"""Every bad input the project knows of, one row each: the command line, the exit code (1: the input
is wrong, 2: the command is), and a fragment of the one-line error.

Each row also checks that stderr is exactly one `attrvis: error: ...` line (no traceback) and, where
files are involved, that nothing was lost or left behind (`after`). The CLI runs in-process; rows
that fail at argument parsing or input checks never load a model, and the rest use random weights
(milliseconds) or the small fake checkpoints built here. Add a row for every new bad input.

`{stem_ext}` in an argument is the file stem.ext built by `Inputs.make_stem` (below) in the test's temp
folder; `{out}` is a path there that does not exist. A `make_` helper that calls `self.keep(path)`
records that input byte for byte, and `_unchanged(stem)` then checks that it is exactly as it was.
"""

from __future__ import annotations

import errno
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from attrvis_jax.apps.cli import main
from attrvis_jax.apps.pipeline import run_files
from attrvis_jax.fileio import STAGING
from test_fileio import disk_full_after, snapshot, write_run


class Inputs(dict):
    """name -> path of a bad (or good) input, built on first use in `root`."""

    def __init__(self, root: Path):
        super().__init__()
        self.root = root
        self.before = {}  # stem -> snapshot of an input `after` checks byte for byte

    def __missing__(self, key: str) -> str:
        stem, _, ext = key.partition("_")  # "photo_png" -> photo.png, made by make_photo
        path = self.root / (f"{stem}.{ext}" if ext else stem)
        getattr(self, "make_" + stem)(path)
        self[key] = str(path)
        return self[key]

    # images
    def make_photo(self, path):
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)

    def make_truncated(self, path):
        self.make_photo(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    def make_corrupt(self, path):
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)

    def make_empty(self, path):
        path.write_bytes(b"")

    def make_text(self, path):
        path.write_text("this is not a picture")

    def make_folder(self, path):
        path.mkdir()

    def make_tiny(self, path):
        Image.new("RGB", (1, 1)).save(path)

    def make_bomb(self, path):
        """A real 4x4 PNG whose header (IHDR, CRC fixed) claims 30000x30000 pixels: PIL's own
        decompression-bomb check refuses it at open."""
        buf = io.BytesIO()
        Image.new("RGB", (4, 4)).save(buf, "PNG")
        data = bytearray(buf.getvalue())
        assert data[12:16] == b"IHDR"
        data[16:24] = struct.pack(">II", 30000, 30000)
        data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
        path.write_bytes(bytes(data))

    # weights and labels
    def make_random(self, path):
        path.write_bytes(np.random.default_rng(1).bytes(4096))

    def make_evil(self, path):
        """A plain pickle that calls os.system: refused before anything runs (checked by `after`)."""
        command = f"touch {self.root / 'pwned'}".encode()
        path.write_bytes(b"\x80\x02cos\nsystem\nX" + struct.pack("<I", len(command)) + command + b"\x85R.")

    def _lite0_checkpoint(self, path, change):
        torch = pytest.importorskip("torch")
        from attrvis_jax.models import architecture
        from attrvis_jax.models.registry import init_variables
        from attrvis_jax.weights.convert import flax_to_torch

        arch = architecture("efficientnet_lite0")
        state = flax_to_torch(init_variables(arch), arch.torch_rename_back)
        change(state)
        torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, path)

    def make_good(self, path):
        self._lite0_checkpoint(path, lambda state: None)

    def make_wrongshape(self, path):
        self._lite0_checkpoint(path, lambda state: state.update(
            {"_blocks.2._project_conv.weight": np.zeros((24, 144, 3, 3), np.float32)}))

    def make_missingkey(self, path):
        self._lite0_checkpoint(path, lambda state: state.pop("_fc.bias"))

    def make_labels3(self, path):
        path.write_text("cat\ndog\nbird\n")

    # output folders
    def make_afile(self, path):
        path.write_text("keep me")

    def make_earlier(self, path):
        """The folder of an earlier 2-seed run, known by its results.json (which lists its files)."""
        write_run(path, seeds=(0, 1))
        self.keep(path)

    # sweeps
    def _spec(self, path, **fields):
        path.write_text(json.dumps({"images": ["sample:chelsea"], **fields}))

    def make_seedstrue(self, path):
        self._spec(path, seeds=True)

    def make_seedstwo(self, path):
        path.write_text('images = ["sample:chelsea"]\nseeds = "two"\n')

    def make_seedsfloat(self, path):
        path.write_text('images = ["sample:chelsea"]\nseeds = 2.7\n')

    def make_seedszero(self, path):
        self._spec(path, seeds=0)

    def make_imagesnumber(self, path):
        path.write_text(json.dumps({"images": 3}))

    def make_renderstepsword(self, path):
        self._spec(path, render={"steps": "many"})

    def make_savebad(self, path):
        self._spec(path, save_images=1)

    def make_typo(self, path):
        self._spec(path, seed=3)

    def make_badtoml(self, path):
        path.write_text("seeds = = 3\n")

    def make_spec(self, path):
        self._spec(path, weights="random", seeds=1)

    def make_sweepdir(self, path):
        """A sweep folder whose store pins other settings (seeds may change, the key may not)."""
        from attrvis_jax.config import SweepConfig
        from attrvis_jax.apps.store import ResultStore
        from attrvis_jax.apps.sweep import fingerprint

        other = SweepConfig(images=("sample:chelsea",), weights="random", seeds=1, key=7)
        with ResultStore(path / "store.sqlite", fingerprint(other)) as store:  # an item: results pin settings
            store.add([_item_row("sample:chelsea|top1|blocks.14|pyramid|0")])
        (path / "sweep.json").write_text(json.dumps(other.to_dict()))

    # several pictures in one file, files that are not regular, specs with values nobody can mean
    def _frames(self, path, fmt):
        frames = [Image.fromarray(np.full((40, 48, 3), 60 * i, np.uint8)) for i in range(3)]
        frames[0].save(path, fmt, save_all=True, append_images=frames[1:])

    def make_anim(self, path):
        self._frames(path, {".gif": "GIF", ".webp": "WEBP", ".png": "PNG"}[path.suffix])

    def make_pages(self, path):
        self._frames(path, "TIFF")

    def make_pipe(self, path):
        os.mkfifo(path)

    def make_hugekey(self, path):
        self._spec(path, weights="random", seeds=1, key=2**70)

    def make_manyseeds(self, path):
        self._spec(path, weights="random", seeds=10**9)

    def make_badgrowth(self, path):
        self._spec(path, weights="random", seeds=1, render={"lambda_growth": -1.0})

    # -- issue 28: sweeps. TINY: a sweep spec that resolves fast (random weights, one image, blocks.1);
    # the folders are what an earlier session (or a user) left, `self.kept[name]` their bytes.
    TINY = dict(weights="random", seeds=1, layers=["blocks.1"], render={"steps": 1},
                attribution={"spatial_steps": 1, "channel_steps": 1, "steps": 7})

    def _sweep_folder(self, path, store_items=None, **changes):
        """sweep.json (and, unless store_items is None, a store with that many items) of TINY with
        `changes`; returns the SweepConfig."""
        from attrvis_jax.config import SweepConfig
        from attrvis_jax.apps.store import ResultStore
        from attrvis_jax.apps.sweep import fingerprint

        config = SweepConfig.from_dict({"images": ["sample:chelsea"], **self.TINY, **changes})
        path.mkdir(exist_ok=True)
        (path / "sweep.json").write_text(json.dumps(config.to_dict()))
        if store_items is not None:
            with ResultStore(path / "store.sqlite", fingerprint(config)) as store:
                store.add([_item_row(f"sample:chelsea|top1|blocks.1|pyramid|{i}") for i in range(store_items)])
        return config

    def _keep(self, path):
        self.setdefault("kept", {})[path.name] = _contents(path)

    def make_tinyspec(self, path):
        self._spec(path, **self.TINY)

    def make_millionseeds(self, path):
        """Every value in range (seeds at most 1_000_000), the plan far beyond any memory: 10 layers x
        6 perturbations x 1_000_000 seeds."""
        self._spec(path, **{**self.TINY, "seeds": 1_000_000, "layers": [f"blocks.{i}" for i in range(10)],
                            "perturbations": ["constant", "gaussian", "blur", "fractal", "pyramid", "none"]})

    def make_badtarget(self, path):
        self._spec(path, **self.TINY, targets=["tabbby"])

    def make_locked(self, path):
        """A folder another sweep holds: a lock file flock()ed through its own open file (flock
        locks belong to an open file, so this process conflicts with itself)."""
        import fcntl
        import os
        import socket
        import time

        self._sweep_folder(path, store_items=1)
        fd = os.open(path / "sweep.lock", os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}).encode())
        self.setdefault("held", []).append(fd)
        self["holder"] = f"pid {os.getpid()} on {socket.gethostname()}, started "
        self._keep(path)

    def make_garbagestore(self, path):
        self._sweep_folder(path)
        (path / "store.sqlite").write_bytes(np.random.default_rng(2).bytes(8192))
        self._keep(path)

    def make_truncatedstore(self, path):
        self._sweep_folder(path, store_items=50)
        data = (path / "store.sqlite").read_bytes()
        (path / "store.sqlite").write_bytes(data[: len(data) // 2])
        self._keep(path)

    def _unit_file(self, path):
        from attrvis_jax.apps.sources import resolve_sources
        from attrvis_jax.apps.sweep import Unit

        folder = path / "attributions"
        folder.mkdir(parents=True)
        return folder / f"{Unit(resolve_sources(['sample:chelsea'])[0], 'top1', 'blocks.1').slug}.npz"

    def make_truncatednpz(self, path):
        self._sweep_folder(path, store_items=0)
        npz = self._unit_file(path)
        np.savez_compressed(npz, values=np.random.default_rng(3).normal(size=(56, 56, 24)))
        npz.write_bytes(npz.read_bytes()[:5000])
        self._keep(path)

    def make_copiedin(self, path):
        """A store of TINY's settings and an attribution of 2 path steps (TINY: 7) copied in."""
        from attrvis_jax.attribution import Attribution
        from attrvis_jax.config import AttributionConfig

        config = self._sweep_folder(path, store_items=0)
        zeros = np.zeros((56, 56, 24), np.float32)
        Attribution(values=zeros, positive=zeros, heatmap=zeros[..., 0], beta=0.1, lambda0=1.0, logit=1.0,
                    model="efficientnet_lite0", layer="blocks.1", target=281, target_name="tabby, tabby cat",
                    method="aumann_shapley", config=config.attribution.replace(steps=2),
                    input_size=224).save(self._unit_file(path))
        assert AttributionConfig.from_dict(self.TINY["attribution"]).steps == 7
        self._keep(path)

    def make_nostore(self, path):
        """store.sqlite deleted; sweep.json says 2 path steps (TINY: 7); a picture of that run."""
        self._sweep_folder(path, attribution={**self.TINY["attribution"], "steps": 2})
        (path / "images" / "unit").mkdir(parents=True)
        (path / "images" / "unit" / "pyramid_seed00.png").write_bytes(b"png")
        self._keep(path)

    def make_orphanpictures(self, path):
        (path / "images" / "unit").mkdir(parents=True)
        (path / "images" / "unit" / "pyramid_seed00.png").write_bytes(b"png")
        self._keep(path)

    def make_failedfirst(self, path):
        """A first session that failed before finishing an item: an empty store and sweep.json of key 7."""
        self._sweep_folder(path, store_items=0, key=7)
        self._keep(path)

    # -- issue 28: output folders and writes
    def keep(self, path):
        self.before[path.name] = snapshot(path)

    def make_userfiles(self, path):
        """The user's own photos, named like a run's files (input.png) or nearly (seed3.png): no run."""
        path.mkdir()
        self.make_photo(path / "input.png")
        (path / "seed3.png").write_bytes((path / "input.png").read_bytes()[::-1])
        (path / "notes.txt").write_text("mine")
        self.keep(path)

    def make_runanduser(self, path):
        """An earlier 1-seed run, and the user's seed01.png beside it (which a 2-seed run writes)."""
        write_run(path, seeds=(0,))
        self.make_photo(path / "seed01.png")
        self.keep(path)

    def make_oldrun(self, path):
        """An earlier 3-seed run of a version whose results.json did not list its files."""
        write_run(path, seeds=(0, 1, 2), files=False)
        self.keep(path)

    def make_otherresults(self, path):
        """A folder holding a sweep's results.json: not a run's."""
        path.mkdir()
        (path / "results.json").write_text(json.dumps({"items": [], "summary": []}))
        self.keep(path)

    def make_emptydir(self, path):
        path.mkdir()
        self.keep(path)

    def make_userfigures(self, path):
        """The user's own spectra.png where `attrvis figures spectra` would write its picture."""
        path.mkdir()
        self.make_photo(path / "spectra.png")
        self.keep(path)

    def make_brokenlink(self, path):
        path.symlink_to(self.root / "nowhere")

    # -- issue 31: judges and groups
    def make_tinyfactory(self, path):
        """A model factory of the tiny 10-class network (tests/tiny.py): a judge of other classes."""
        path.write_text("from tiny import tiny_model\n")

    def make_groupszero(self, path):
        self._spec(path, **self.TINY, groups=0)

    def make_nosuchjudge(self, path):
        self._spec(path, **self.TINY, judge="nosuchmodel")


def _item_row(item_id):
    from attrvis_jax.apps.store import NAMES

    return {**{name: 0 for name in NAMES if name not in ("session", "finished_at")}, "id": item_id}


def _contents(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _kept(name):
    """Nothing in the folder changed, and nothing was added or removed (no lock file left behind)."""
    return lambda inputs: _contents(inputs.root / name) == inputs["kept"][name]


def _in_folder(case_id, folder, fragment):
    """A row: the TINY spec into the folder `make_<folder>` left, refused (exit 1) with it unchanged."""
    return case_id, ["sweep", "{tinyspec_json}", "--out", "{" + folder + "}"], 1, fragment, _kept(folder)


def _absent(name):
    return lambda inputs: not (inputs.root / name).exists()


def _no_drafts(inputs):
    return not any(p.name.startswith(STAGING) for p in inputs.root.rglob("*"))


def _cwd_untouched(inputs):
    return not any((inputs.root / "cwd").iterdir())


def _unchanged(stem):
    """`after`: the input folder `stem` is byte for byte as it was, and no draft of a run is left."""
    return lambda inputs: snapshot(inputs.root / stem) == inputs.before[stem] and _no_drafts(inputs)


def _sweep_json_kept(inputs):
    return json.loads((inputs.root / "sweepdir" / "sweep.json").read_text())["key"] == 7


RUN = ["run", "{photo_png}", "--out", "{out}", "--quiet"]
FAST = ["--steps", "1", "--seeds", "1", "--weights", "random"]

# (id, argv, exit code, fragment of the message, check of what is left on disk or None)
CASES = [
    # -- numbers that once silently meant the default, and other bad flags (argparse: nothing loads)
    ("seeds-0", RUN + ["--seeds", "0"], 2, "argument --seeds: must be at least 1, got 0", None),
    ("seeds-negative", RUN + ["--seeds", "-3"], 2, "argument --seeds: must be at least 1, got -3", None),
    ("seeds-word", RUN + ["--seeds", "two"], 2, "argument --seeds: expected a whole number, got 'two'", None),
    ("seed-batch-0", RUN + ["--seed-batch", "0"], 2, "argument --seed-batch: must be at least 1, got 0", None),
    ("steps-0", RUN + ["--steps", "0"], 2, "argument --steps: must be at least 1, got 0", None),
    ("path-steps-0", RUN + ["--path-steps", "0"], 2, "argument --path-steps: must be at least 1", None),
    ("baseline-steps-0", RUN + ["--baseline-steps", "0"], 2, "argument --baseline-steps: must be at least 1", None),
    ("demo-seeds-0", ["demo", "--seeds", "0", "--out", "{out}"], 2, "argument --seeds: must be at least 1", None),
    ("ablation-batch-0", ["ablation", "--batch", "0", "--out", "{out}"], 2, "argument --batch: must be at least 1",
     None),
    ("ablation-lr-0", ["ablation", "--lr", "0", "--out", "{out}"], 2, "argument --lr: must be a positive", None),
    ("figures-steps-0", ["figures", "all", "--steps", "0", "--out", "{out}"], 2, "argument --steps: must be at", None),
    ("top-0", ["classify", "{photo_png}", "--top", "0"], 2, "argument --top: must be at least 1, got 0", None),
    ("top-negative", ["classify", "{photo_png}", "--top", "-3"], 2, "argument --top: must be at least 1", None),
    ("no-image", ["classify"], 2, "the following arguments are required: image", None),
    ("bad-choice", RUN + ["--perturbation", "wobble"], 2, "argument --perturbation: invalid choice: 'wobble'", None),
    ("unknown-flag", ["classify", "{photo_png}", "--nope"], 2, "unrecognized arguments: --nope", None),
    ("unknown-model", ["layers", "--model", "resnet5O"], 2, "closest: 'resnet50'", None),
    ("layers-size", ["layers", "--size", "16"], 2, "--size 16 is too small", None),
    ("unknown-figure", ["figures", "spectrum", "--out", "{out}"], 2, "unknown figure(s) ['spectrum']", None),
    ("verify-no-model", ["weights", "verify"], 2, "weights verify needs a model name", None),
    # -- output folders (checked before anything loads)
    ("out-is-a-file", RUN[:3] + ["{afile_txt}"], 1, "is an existing file, not a folder",
     lambda i: Path(i["afile_txt"]).read_text() == "keep me"),
    ("out-under-a-file", RUN[:3] + ["{afile_txt}/sub"], 1, "is a file", None),
    ("out-unwritable", RUN[:3] + ["/proc/attrvis-test/out"], 1, "cannot write output folder /proc/attrvis-test/out",
     None),
    ("out-holds-a-run", RUN[:3] + ["{earlier}"], 1, "holds an earlier run (11 of its files", _unchanged("earlier")),
    ("demo-out-is-a-file", ["demo", "--out", "{afile_txt}"], 1, "is an existing file", None),
    ("figures-out-is-a-file", ["figures", "spectra", "--out", "{afile_txt}"], 1, "is an existing file", None),
    ("ablation-out-unwritable", ["ablation", "--out", "/proc/attrvis-test"], 1, "cannot write output folder", None),
    ("sweep-out-is-a-file", ["sweep", "{spec_json}", "--out", "{afile_txt}"], 1, "is an existing file", None),
    # -- images (read before the model loads; the run's --out is never created)
    ("image-missing", ["run", "{out}.jpg", "--out", "{out}"], 1, "image file not found", _absent("out")),
    ("image-sample-typo", ["classify", "cofee"], 1, "closest: 'coffee'", None),
    ("image-corrupt", ["run", "{corrupt_png}", "--out", "{out}"], 1, "is not an image file PIL can read", _absent("out")),
    ("image-truncated", ["classify", "{truncated_png}"], 1, "truncated or corrupt", None),
    ("image-zero-bytes", ["classify", "{empty_jpg}"], 1, "is not an image file PIL can read", None),
    ("image-text", ["classify", "{text_jpg}"], 1, "is not an image file PIL can read", None),
    ("image-directory", ["classify", "{folder}"], 1, "is a directory, not an image file", None),
    ("image-bomb", ["classify", "{bomb_png}"], 1, "is too large to read: Image size (900000000 pixels)", None),
    ("image-1x1", ["classify", "{tiny_png}", "--weights", "random"], 1, "image of 1x1 pixels is too small", None),
    # -- weights and labels
    ("weights-missing", ["classify", "{photo_png}", "--weights", "{out}.pth"], 1, "weight file not found", None),
    ("weights-random-bytes", ["classify", "{photo_png}", "--weights", "{random_pth}"], 1,
     "not a PyTorch checkpoint", None),
    ("weights-evil", ["classify", "{photo_png}", "--weights", "{evil_pth}"], 1,
     "the pickle asks for os.system", _absent("pwned")),
    ("verify-random-bytes", ["weights", "verify", "googlenet", "{random_pth}"], 1, "not a PyTorch checkpoint", None),
    ("verify-jpeg", ["weights", "verify", "googlenet", "{photo_jpg}"], 1, "not a PyTorch checkpoint", None),
    ("verify-evil", ["weights", "verify", "efficientnet_lite0", "{evil_pth}"], 1, "the pickle asks for os.system",
     _absent("pwned")),
    ("verify-wrong-shape", ["weights", "verify", "efficientnet_lite0", "{wrongshape_pth}"], 1,
     "shape mismatch at key '_blocks.2._project_conv.weight'", None),
    ("verify-missing-key", ["weights", "verify", "efficientnet_lite0", "{missingkey_pth}"], 1,
     "no key in the file, first: params/fc/bias", None),
    ("verify-wrong-checksum", ["weights", "verify", "efficientnet_lite0", "{good_pth}", "--sha256", "0" * 64], 1,
     "checksum mismatch for good.pth", None),
    ("labels-3-lines", ["classify", "{photo_png}", "--labels", "{labels3_txt}"], 1,
     "has 3 names; efficientnet_lite0 has 1000 classes", None),
    ("labels-missing", ["classify", "{photo_png}", "--labels", "{out}.txt"], 1, "label file not found", None),
    # -- classes, layers, memory (random weights: nothing heavy loads)
    ("target-negative", RUN + FAST + ["--target", "-1"], 2,
     "class index -1 out of range for efficientnet_lite0 (valid: 0..999)", _absent("out")),
    ("target-too-big", RUN + FAST + ["--target", "1000"], 2, "class index 1000 out of range", _absent("out")),
    ("target-typo", RUN + FAST + ["--target", "tabbby"], 2, "closest: 'tabby'", _absent("out")),
    ("layer-unknown", RUN + FAST + ["--layer", "blocks.99"], 2, "unknown layer of efficientnet_lite0 'blocks.99'",
     _absent("out")),
    ("seeds-beyond-memory", RUN + ["--steps", "1", "--weights", "random", "--seeds", "100000"], 1,
     "seeds 100000: 100000 renders of efficientnet_lite0:blocks.14 at 224x224 at once need at least",
     _absent("out")),
    ("classes-no-hit", ["classes", "--search", "zzzz"], 1, "no class name contains 'zzzz'", None),
    # -- sweep specs: every field's type and range, the field named
    ("sweep-seeds-true", ["sweep", "{seedstrue_json}", "--out", "{out}"], 1, "seeds must be a whole number, got True",
     _absent("out")),
    ("sweep-seeds-word", ["sweep", "{seedstwo_toml}", "--out", "{out}"], 1, "seeds must be a whole number, got 'two'",
     None),
    ("sweep-seeds-float", ["sweep", "{seedsfloat_toml}", "--out", "{out}"], 1, "seeds must be a whole number, got 2.7",
     None),
    ("sweep-seeds-0", ["sweep", "{seedszero_json}", "--out", "{out}"], 1, "seeds must be in [1, 1_000_000], got 0",
     None),
    ("sweep-images-number", ["sweep", "{imagesnumber_json}", "--out", "{out}"], 1,
     "images must be a string or a list of strings, got 3", None),
    ("sweep-render-steps", ["sweep", "{renderstepsword_json}", "--out", "{out}"], 1,
     "[render] steps must be a whole number, got 'many'", None),
    ("sweep-bool-field", ["sweep", "{savebad_json}", "--out", "{out}"], 1, "save_images must be true or false, got 1",
     None),
    ("sweep-unknown-field", ["sweep", "{typo_json}", "--out", "{out}"], 1, "unknown sweep field(s) ['seed']", None),
    ("sweep-bad-toml", ["sweep", "{badtoml_toml}", "--out", "{out}"], 1, "is not a valid toml sweep spec", None),
    ("sweep-missing-spec", ["sweep", "{out}.toml", "--out", "{out}"], 1, "cannot read the sweep spec", None),
    ("sweep-other-settings", ["sweep", "{spec_json}", "--out", "{sweepdir}"], 1,
     "holds a sweep with other settings (key differ)", _sweep_json_kept),
    ("figures-user-file", ["figures", "spectra", "--weights", "random", "--out", "{userfigures}"], 1,
     "userfigures/spectra.png is not an earlier figures run's file and the figures run would replace it",
     _unchanged("userfigures")),
    # -- catalogs (attrvis catalog): channel lists and settings are the command's
    ("catalog-channels-backwards", ["catalog", "--weights", "random", "--channels", "5-2", "--out", "{out}"], 2,
     "argument --channels: the channel range '5-2' runs backwards", _absent("out")),
    ("catalog-channels-word", ["catalog", "--weights", "random", "--channels", "all", "--out", "{out}"], 2,
     "argument --channels: expected channel indices and ranges like 0-31", _absent("out")),
    ("catalog-channel-out-of-range", ["catalog", "--weights", "random", "--layer", "blocks.1", "--channels", "20-30",
                                      "--out", "{out}"], 2,
     "channels [24, 25, 26, 27, 28] out of range for blocks.1 (valid: 0..23)", _absent("out")),
    ("catalog-redirect-negative", ["catalog", "--redirect-steps", "-1", "--out", "{out}"], 2,
     "argument --redirect-steps: must be at least 0, got -1", _absent("out")),
    ("catalog-empty-out", ["catalog", "--out", ""], 2, "argument --out: an empty path", None),
    # -- issue 28: images, class names, seeds and config values (checked where they enter)
    ("image-animated-gif", ["classify", "{anim_gif}"], 1, "anim.gif is an animation of 3 frames (GIF)", None),
    ("image-animated-webp", ["run", "{anim_webp}", "--out", "{out}"], 1, "is an animation of 3 frames (WEBP)",
     _absent("out")),
    ("image-animated-png", ["classify", "{anim_png}"], 1, "is an animation of 3 frames (PNG)", None),
    ("image-multipage-tiff", ["classify", "{pages_tif}"], 1, "pages.tif is a file of 3 pages (TIFF)", None),
    ("image-fifo", ["classify", "{pipe_jpg}"], 1, "pipe.jpg is not a regular file (a pipe, device or socket)", None),
    ("image-char-device", ["classify", "/dev/zero"], 1, "/dev/zero is not a regular file", None),
    ("labels-fifo", ["classes", "--labels", "{pipe_txt}"], 1, "pipe.txt is not a regular file", None),
    ("sweep-spec-fifo", ["sweep", "{pipe_toml}", "--out", "{out}"], 1,
     "cannot read the sweep spec: " "{pipe_toml} is not a regular file", _absent("out")),
    ("target-ambiguous", RUN + FAST + ["--target", "crane"], 2,
     "class name 'crane' is ambiguous for efficientnet_lite0: [134 n02012849] 'crane', [517 n03126707] 'crane'",
     _absent("out")),
    ("target-ambiguous-synonym", RUN + FAST + ["--target", "Panther"], 2, "class name 'Panther' is ambiguous",
     _absent("out")),
    ("seed-past-32-bits", RUN + ["--seed", str(2**70)], 2,
     "argument --seed: the seed must be in [0, 4_294_967_295] (JAX seeds are 32-bit)", _absent("out")),
    ("seed-negative", RUN + ["--seed", "-1"], 2, "argument --seed: the seed must be in [0, 4_294_967_295]", None),
    ("ablation-seed-past-32-bits", ["ablation", "--seed", str(2**64), "--out", "{out}"], 2,
     "argument --seed: the seed must be in", _absent("out")),
    ("figures-seed-word", ["figures", "all", "--seed", "x", "--out", "{out}"], 2,
     "argument --seed: expected a whole number, got 'x'", None),
    ("sweep-key-past-32-bits", ["sweep", "{hugekey_json}", "--out", "{out}"], 1,
     "key must be in [0, 4_294_967_295] (JAX seeds are 32-bit)", _absent("out")),
    ("sweep-seeds-1e9", ["sweep", "{manyseeds_json}", "--out", "{out}"], 1, "seeds must be in [1, 1_000_000]",
     _absent("out")),
    ("sweep-negative-growth", ["sweep", "{badgrowth_json}", "--out", "{out}"], 1,
     "[render] lambda_growth must be in [1, 10]", _absent("out")),
    # -- issue 28: sweeps (a folder is never mixed or lost: `_kept` checks it byte for byte)
    _in_folder("sweep-folder-in-use", "locked", "{locked} is in use by another sweep ({holder}"),
    _in_folder("sweep-store-random-bytes", "garbagestore",
               "{garbagestore}/store.sqlite is damaged or unreadable (DatabaseError: file is not a database): "
               "move it away and rerun; the sweep redoes the items it recorded"),
    _in_folder("sweep-store-truncated", "truncatedstore", "{truncatedstore}/store.sqlite is damaged or unreadable"),
    _in_folder("sweep-attribution-truncated", "truncatednpz", "-662db754.npz is damaged or unreadable ("),
    _in_folder("sweep-attribution-other-settings", "copiedin",
               "-662db754.npz was computed with other settings than this sweep's (attribution.steps differ): "
               "move it away"),
    _in_folder("sweep-store-gone-other-settings", "nostore",
               "holds a sweep with other settings (attribution.steps differ; recorded in sweep.json, there is "
               "no store.sqlite)"),
    _in_folder("sweep-pictures-of-unknown-settings", "orphanpictures",
               "holds pictures (images/) but no store.sqlite or sweep.json"),
    ("sweep-sixty-million-items", ["sweep", "{millionseeds_json}", "--out", "{out}"], 1,
     "the sweep has 60000000 items (1 image x 1 target x 10 layers x 6 perturbations x 1000000 seeds): "
     "planning and recording them needs about 360.0 GB of memory, more than the", _absent("out")),
    ("sweep-refused-leaves-no-folder", ["sweep", "{badtarget_json}", "--out", "{out}/sub"], 2, "closest: 'tabby'",
     _absent("out")),
    # a first session that finished no item pins nothing: other settings get as far as the spec check
    ("sweep-failed-first-session-pins-nothing", ["sweep", "{badtarget_json}", "--out", "{failedfirst}"], 2,
     "closest: 'tabby'", _kept("failedfirst")),
    # -- issue 28: output folders and writes
    # a run knows an earlier run by its results.json, never by file names; a user's file is never replaced
    ("out-holds-user-files", RUN[:3] + ["{userfiles}", "--quiet"] + FAST, 1,
     "{userfiles}/input.png is not an earlier run's file and the run would replace it: move it away",
     _unchanged("userfiles")),
    ("out-holds-user-files-overwrite", RUN[:3] + ["{userfiles}", "--quiet", "--overwrite"] + FAST, 1,
     "{userfiles}/input.png is not an earlier run's file", _unchanged("userfiles")),
    ("out-run-and-a-user-file", RUN[:3] + ["{runanduser}", "--quiet", "--overwrite"] + FAST + ["--seeds", "2"], 1,
     "{runanduser}/seed01.png is not an earlier run's file", _unchanged("runanduser")),
    ("out-holds-other-results-json", RUN[:3] + ["{otherresults}", "--quiet", "--overwrite"] + FAST, 1,
     "{otherresults}/results.json is not an earlier run's file", _unchanged("otherresults")),
    ("out-holds-an-older-run", RUN[:3] + ["{oldrun}"], 1, "holds an earlier run (12 of its files", _unchanged("oldrun")),
    ("demo-out-holds-user-files", ["demo", "--out", "{userfiles}", "--seeds", "1", "--steps", "1", "--quiet"], 1,
     "{userfiles}/input.png is not an earlier run's file", _unchanged("userfiles")),
    # the layer and class are resolved once, by pipeline.run / the figures' context: exit 2, no folder made
    ("figures-target-too-big", ["figures", "spectra", "--weights", "random", "--target", "1000", "--out", "{out}"], 2,
     "class index 1000 out of range", _absent("out")),
    ("figures-layer-unknown", ["figures", "spectra", "--weights", "random", "--layer", "blocks.99", "--out", "{out}"],
     2, "unknown layer of efficientnet_lite0 'blocks.99'", _absent("out")),
    ("out-broken-link", RUN[:3] + ["{brokenlink}", "--quiet"] + FAST, 1, "output folder {brokenlink} is a broken link",
     lambda i: Path(i["brokenlink"]).is_symlink() and _no_drafts(i)),
    # an empty path (an unset variable in a script) is refused for every path argument
    *[(f"empty-{name}", argv, 2, f"argument {arg}: an empty path (an unset variable?)", _cwd_untouched)
      for name, arg, argv in [
          ("run-out", "--out", ["run", "{photo_png}", "--out", ""]),
          ("run-out-blank", "--out", ["run", "{photo_png}", "--out", "  "]),
          ("run-image", "image", ["run", "", "--out", "{emptydir}"]),
          ("run-weights", "--weights", ["run", "{photo_png}", "--weights", "", "--out", "{emptydir}"]),
          ("run-labels", "--labels", ["run", "{photo_png}", "--labels", " ", "--out", "{emptydir}"]),
          ("demo-out", "--out", ["demo", "--out", ""]),
          ("demo-sample", "--sample", ["demo", "--sample", "", "--out", "{emptydir}"]),
          ("classify-image", "image", ["classify", ""]),
          ("figures-out", "--out", ["figures", "all", "--out", ""]),
          ("figures-image", "--image", ["figures", "all", "--image", "", "--out", "{emptydir}"]),
          ("ablation-out", "--out", ["ablation", "--out", ""]),
          ("ablation-images", "--images", ["ablation", "--images", "chelsea", "", "--out", "{emptydir}"]),
          ("ablation-weights", "--weights", ["ablation", "--weights", "", "--out", "{emptydir}"]),
          ("sweep-spec", "spec", ["sweep", "", "--out", "{emptydir}"]),
          ("sweep-out", "--out", ["sweep", "{spec_json}", "--out", ""]),
          ("verify-path", "path", ["weights", "verify", "googlenet", ""]),
          ("convert-path", "path", ["weights", "convert", "googlenet", "", "--out", "{emptydir}/g.npz"]),
          ("convert-out", "--out", ["weights", "convert", "googlenet", "--out", ""]),
      ]],
    # -- issue 31: a second network's verdict (--judge) and channel groups (--groups), refused before any work
    ("groups-0", RUN + ["--groups", "0"], 2, "argument --groups: must be at least 1, got 0", None),
    ("groups-beyond-channels", RUN + FAST + ["--groups", "193"], 1,
     "groups must be between 1 and the 192 channels of blocks.14, got 193", _absent("out")),
    ("group-images-without-groups", RUN + ["--group-images", "{folder}"], 2,
     "--group-images is for --groups: name the number of groups too", _absent("out")),
    ("group-images-missing", RUN + FAST + ["--groups", "2", "--group-images", "{out}.d"], 1,
     "image source not found: '{out}.d' is not an existing file or folder", _absent("out")),
    ("judge-unknown", RUN + FAST + ["--judge", "nosuchmodel"], 2, "unknown model 'nosuchmodel'", _absent("out")),
    ("judge-other-classes", RUN + FAST + ["--judge", "{tinyfactory_py}:tiny_model"], 1,
     "the judge tiny has other classes than efficientnet_lite0 (10 classes, efficientnet_lite0 has 1000): a judge "
     "must give every class the same index", _absent("out")),
    ("demo-judge-unknown", ["demo", "--judge", "nosuchmodel", "--out", "{out}"], 2, "unknown model 'nosuchmodel'",
     _absent("out")),
    ("sweep-groups-0", ["sweep", "{groupszero_json}", "--out", "{out}"], 1, "groups must be in [1, 1_000_000], got 0",
     _absent("out")),
    ("sweep-judge-unknown", ["sweep", "{nosuchjudge_json}", "--out", "{out}"], 2, "unknown model 'nosuchmodel'",
     _absent("out")),
    # weights convert: its --out checked before the conversion, the write atomic, every failure one line
    ("convert-out-is-a-folder", ["weights", "convert", "efficientnet_lite0", "--out", "{emptydir}"], 1,
     "output file {emptydir} is an existing folder: name the file to write", _unchanged("emptydir")),
    ("convert-out-under-a-file", ["weights", "convert", "efficientnet_lite0", "--out", "{afile_txt}/w.npz"], 1,
     "cannot create output file {afile_txt}/w.npz: {afile_txt} is a file",
     lambda i: Path(i["afile_txt"]).read_text() == "keep me"),
    ("convert-out-unwritable", ["weights", "convert", "efficientnet_lite0", "--out", "/proc/attrvis-test.npz"], 1,
     "cannot write output file /proc/attrvis-test.npz: No such file or directory (/proc)", None),
]


@pytest.mark.parametrize("argv,code,fragment,after", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input(tmp_path, capsys, monkeypatch, argv, code, fragment, after):
    inputs = Inputs(tmp_path)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # an empty current folder: nothing may land in it
    inputs["out"] = str(tmp_path / "out")
    args = [a.format_map(inputs) for a in argv]
    try:
        got = main(args)
    except SystemExit as e:  # argparse
        got = e.code
    out, err = capsys.readouterr()
    assert got == code, (got, err)
    assert err.startswith("attrvis: error: ") and err.count("\n") == 1, err
    assert fragment.format_map(inputs) in err, err
    assert "Traceback" not in err + out
    if after is not None:
        assert after(inputs), f"{argv}: files lost or left behind"
    for fd in inputs.get("held", []):
        os.close(fd)


def test_every_case_has_a_distinct_id():
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))


def test_version(capsys):
    import attrvis_jax

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"attrvis {attrvis_jax.__version__}\n"


# -- issue 28: a full disk or Ctrl-C while a run writes ----------------------------------------------
TINY_RUN = FAST + ["--path-steps", "2", "--baseline-steps", "1", "--quiet"]
WRITES = run_files((0,))  # what a 1-seed run writes, in order


def _folder_state(inputs, state):
    """`--out` of each kind: a fresh path, an earlier run (with --overwrite), the user's other files."""
    out = inputs.root / "out"
    if state == "earlier":
        write_run(out, seeds=(0, 1))
        (out / "notes.txt").write_text("mine")
        return out, ["--overwrite"]
    if state == "userfiles":
        out.mkdir()
        inputs.make_photo(out / "holiday.png")
        (out / "seed3.png").write_text("mine")
    return out, []


def _tree(root):
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("state", ["fresh", "earlier", "userfiles"])
@pytest.mark.parametrize("failure,after", [("full", 0), ("full", 4), ("full", len(WRITES) - 1), ("ctrl-c", 4)],
                         ids=["full-at-first", "full-mid", "full-at-last", "ctrl-c-mid"])
def test_a_failed_write_loses_nothing_and_leaves_nothing(tmp_path, capsys, monkeypatch, state, failure, after):
    """The disk fills (or Ctrl-C comes) after `after` of the run's files: one line naming the file
    and the reason, the folder exactly as before (an earlier run whole, the user's files too, a fresh
    one never made) and no draft left; then the same command with room to write succeeds."""
    inputs = Inputs(tmp_path)
    out, extra = _folder_state(inputs, state)
    argv = ["run", inputs["photo_png"], "--out", str(out), *TINY_RUN, *extra]
    before = _tree(tmp_path)
    started = disk_full_after(monkeypatch, after, KeyboardInterrupt() if failure == "ctrl-c" else None)
    code = main(argv)
    err = capsys.readouterr().err
    if failure == "full":
        assert (code, err) == (1, f"attrvis: error: cannot write {out / WRITES[after]}: No space left on device\n")
    else:
        assert (code, err) == (130, "attrvis: interrupted\n")
    assert len(started) == after + 1 and _tree(tmp_path) == before
    monkeypatch.undo()
    assert main(argv) == 0, capsys.readouterr().err
    earlier = {f"out/{name}" for name in run_files((0, 1))}
    theirs = {name: data for name, data in before.items() if name not in earlier}  # the user's, and the photo
    after_run = _tree(tmp_path)
    assert {name: after_run.get(name) for name in theirs} == theirs
    assert sorted(p.name for p in out.iterdir()) == sorted(WRITES + [n[4:] for n in theirs if n.startswith("out/")])
    assert json.loads((out / "results.json").read_text())["files"] == WRITES  # the earlier run's seed01: gone


def test_any_other_oserror_is_one_line(capsys, monkeypatch):
    """The CLI's last net: an OSError no check foresaw is one line with the file and the reason."""
    from attrvis_jax.apps import cli

    def fail(args):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), "/somewhere/file.npz")

    monkeypatch.setattr(cli, "cmd_classes", fail)
    assert main(["classes"]) == 1
    assert capsys.readouterr().err == "attrvis: error: /somewhere/file.npz: Permission denied\n"


def test_convert_on_a_full_disk_keeps_the_file_it_would_replace(tmp_path, capsys, monkeypatch):
    out = tmp_path / "w.npz"
    out.write_bytes(b"the earlier conversion")
    disk_full_after(monkeypatch, 0)
    assert main(["weights", "convert", "efficientnet_lite0", "--out", str(out)]) == 1
    assert capsys.readouterr().err == f"attrvis: error: cannot write {out}: No space left on device\n"
    assert [p.name for p in tmp_path.iterdir()] == ["w.npz"] and out.read_bytes() == b"the earlier conversion"
