"""Image sources for sweeps: folders, files, bundled photos and tensorflow-datasets splits.

The tfds tests use a real ArrayRecord dataset written here (no TensorFlow needed) and
`tfds.testing.mock_data` for imagenet2012 and caltech_birds2011; they skip only when
tensorflow-datasets is not installed (the `tfds` extra).
"""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from attrvis_jax.apps import sources
from attrvis_jax.data import SAMPLES
from attrvis_jax.errors import AttrvisError
from attrvis_jax.apps.sources import ImageRecord, resolve_sources


def _pixels(seed: int, h: int = 9, w: int = 13) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _write(path, arr=None, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = _pixels(seed) if arr is None else arr
    Image.fromarray(arr).save(path, format="PNG")
    return arr


def _error(spec, **kw) -> str:
    with pytest.raises(AttrvisError) as info:
        resolve_sources(spec, **kw)
    message = str(info.value)
    assert "\n" not in message, message  # one clear line
    return message


# ----------------------------------------------------------------------------------------------
# folders and files


def test_flat_folder_sorted_recursive_case_insensitive_and_lazy(tmp_path, monkeypatch):
    root = tmp_path / "imgs"
    # Created out of order: the result must follow the sorted relative paths, not creation order.
    made = {}
    for i, name in enumerate(["zeta.PNG", "alpha.png", "Mid.JpEg", "deep/er/x.webp", "b.TIFF"]):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = {".png": "PNG", ".jpeg": "JPEG", ".webp": "WEBP", ".tiff": "TIFF"}[path.suffix.lower()]
        Image.fromarray(_pixels(i)).save(path, format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        made[name] = _pixels(i)
    (root / "notes.txt").write_text("not an image")
    _write(root / ".hidden.png")
    _write(root / ".cache" / "copy.png")

    calls = []
    real_read = sources.data.read_image
    monkeypatch.setattr(sources.data, "read_image", lambda src: calls.append(src) or real_read(src))
    records = resolve_sources(str(root))
    assert calls == []  # resolving reads no image

    rels = ["Mid.JpEg", "alpha.png", "b.TIFF", "deep/er/x.webp", "zeta.PNG"]  # byte order: upper first
    assert [r.id for r in records] == [f"file:{root.as_posix()}/{rel}" for rel in rels]
    assert all(r.label is None for r in records)  # flat/mixed depth: no class layout
    for rel, record in zip(rels, records):
        img = record.load()
        assert img.dtype == np.uint8 and img.shape == (9, 13, 3)
        if not rel.lower().endswith(".jpeg"):  # lossless formats round-trip exactly
            np.testing.assert_array_equal(img, made[rel])
    assert len(calls) == len(records)
    assert [r.id for r in resolve_sources(str(root))] == [r.id for r in records]  # deterministic


def test_class_per_subfolder_labels(tmp_path):
    root = tmp_path / "data"
    for cls, name, seed in [("dog", "b.png", 1), ("cat", "z.png", 2), ("cat", "a.png", 3)]:
        _write(root / cls / name, seed=seed)
    records = resolve_sources(str(root))
    assert [(r.id.rsplit("/", 2)[-2:], r.label) for r in records] == [
        (["cat", "a.png"], "cat"),
        (["cat", "z.png"], "cat"),
        (["dog", "b.png"], "dog"),
    ]
    np.testing.assert_array_equal(records[0].load(), _pixels(3))


def test_mixed_depths_give_no_labels(tmp_path):
    _write(tmp_path / "top.png")
    _write(tmp_path / "cat" / "x.png")
    records = resolve_sources(str(tmp_path))
    assert [r.label for r in records] == [None, None]
    assert [r.id.rsplit("/", 1)[-1] for r in records] == ["x.png", "top.png"]


def test_single_file_id_label_and_modes(tmp_path, monkeypatch):
    arr = _write(tmp_path / "pic.png", seed=7)
    monkeypatch.chdir(tmp_path)
    (record,) = resolve_sources("./pic.png")
    assert record == ImageRecord("file:pic.png", None)
    np.testing.assert_array_equal(record.load(), arr)

    gray = np.arange(120, dtype=np.uint8).reshape(10, 12)
    Image.fromarray(gray, "L").save(tmp_path / "gray.png")
    rgba = np.zeros((6, 6, 4), np.uint8)  # fully transparent -> white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "clear.png")
    g, c = (r.load() for r in resolve_sources(["gray.png", f"file:{tmp_path / 'clear.png'}"]))
    assert g.shape == (10, 12, 3) and g.dtype == np.uint8
    np.testing.assert_array_equal(g, np.repeat(gray[..., None], 3, axis=-1))
    assert c.shape == (6, 6, 3) and (c == 255).all()


def test_explicit_file_with_unusual_extension(tmp_path):
    arr = _pixels(4)
    Image.fromarray(arr).save(tmp_path / "frame.dat", format="PNG")
    (record,) = resolve_sources(str(tmp_path / "frame.dat"))
    np.testing.assert_array_equal(record.load(), arr)
    (tmp_path / "notes.txt").write_text("hello")
    assert "not an image file" in _error(str(tmp_path / "notes.txt"))


def test_mixture_dedup_first_wins_and_limit(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, seed in [("d/a.png", 1), ("d/b.png", 2), ("e.png", 3)]:
        _write(tmp_path / name, seed=seed)
    specs = ["e.png", "d", "./d/b.png", str(tmp_path / "d" / "a.png"), "chelsea", "sample:chelsea",
             "samples", "file:e.png"]
    records = resolve_sources(specs)
    ids = [r.id for r in records]
    assert ids == ["file:e.png", "file:d/a.png", "file:d/b.png", "sample:chelsea", "sample:coffee",
                   "sample:rocket", "sample:motorcycle"]
    assert len(set(ids)) == len(ids)
    assert [r.id for r in resolve_sources(specs, limit=3)] == ids[:3]
    assert resolve_sources(specs, limit=0) == []
    assert [r.id for r in resolve_sources(specs, limit=100)] == ids
    assert "limit" in _error(specs, limit=-1)


def test_samples(tmp_path, monkeypatch):
    records = resolve_sources("samples")
    assert [r.id for r in records] == [f"sample:{n}" for n in SAMPLES]
    assert [r.label for r in records] == [SAMPLES[n][1] for n in SAMPLES]
    assert records[0].label == "tabby, tabby cat"
    assert resolve_sources("sample:all") == records
    (coffee,) = resolve_sources("coffee")
    assert coffee == ImageRecord("sample:coffee", "espresso")
    img = coffee.load()
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and img.shape[:2] == (400, 600)
    # An existing folder of the same name wins over the bare sample name.
    monkeypatch.chdir(tmp_path)
    _write(tmp_path / "chelsea" / "mine.png")
    assert [r.id for r in resolve_sources("chelsea")] == ["file:chelsea/mine.png"]
    assert [r.id for r in resolve_sources("sample:chelsea")] == ["sample:chelsea"]


def test_records_pickle_and_compare_by_id_and_label(tmp_path):
    arr = _write(tmp_path / "p.png", seed=5)
    (record,) = resolve_sources(str(tmp_path / "p.png"))
    again = pickle.loads(pickle.dumps(record))
    assert again == record and hash(again) == hash(record)
    np.testing.assert_array_equal(again.load(), arr)
    own = ImageRecord("mine", "cat", loader=lambda: np.zeros((4, 5), np.float32))
    assert own.load().shape == (4, 5, 3) and own.load().dtype == np.uint8
    assert "no loader" in str(pytest.raises(AttrvisError, ImageRecord("x").load).value)


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("no/such/file.png", "not found"),
        ("hf:cats", "unknown image source prefix 'hf:'"),
        ("tfsd:mnist", "closest: 'tfds:'"),
        ("chelsee", "closest: 'chelsea'"),
        ("sample:chelsee", "closest: 'chelsea'"),
        ("sample:", "unknown sample image"),
        ("file:", "no path"),
        ("tfds:", "no dataset name"),
        ("tfds:mnist:test@5:2", "STOP must exceed START"),
        ("tfds:mnist:test@3:3", "STOP must exceed START"),
        ("tfds:mnist:test@a:b", "bad example range"),
        ("tfds:mnist:test@-1:3", "bad example range"),
        ("tfds:mnist:test@7", "bad example range"),
        ("tfds:mnist:test[:10]", "@START:STOP"),
        ("tfds:mnist:test:extra", "cannot parse"),
        ("   ", "empty image source spec"),
    ],
)
def test_clear_errors(spec, expected):
    assert expected in _error(spec)


def test_folder_errors(tmp_path):
    assert "it is empty" in _error(str(tmp_path))
    (tmp_path / "a.txt").write_text("x")
    _write(tmp_path / ".hidden" / "x.png")
    message = _error(str(tmp_path))
    assert "no image files" in message and "1 other files" in message
    assert "no image sources" in _error([])
    assert "not found" in _error(["samples", str(tmp_path / "missing")])  # later specs are checked too


def test_base_install_needs_no_tfds(tmp_path, monkeypatch):
    _write(tmp_path / "x.png")
    code = "import sys, attrvis_jax.apps.sources as s; assert 'tensorflow_datasets' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails as if absent
    assert len(resolve_sources([str(tmp_path), "sample:rocket"])) == 2
    assert "pip install 'attrvis-jax[tfds]'" in _error("tfds:imagenet2012:validation@0:2")


# ----------------------------------------------------------------------------------------------
# tensorflow-datasets: a real ArrayRecord dataset written here


@pytest.fixture(scope="module")
def tfds():
    return pytest.importorskip("tensorflow_datasets", reason="the tfds extra is not installed")


_CLASSES = ["cat", "dog", "bird"]
_SPLITS = {"train": 3, "validation": 6}


def _tiny_example(split: str, i: int):
    seed = (0 if split == "train" else 100) + i
    return _pixels(seed, 8 + i, 10), _pixels(seed + 50, 5, 5), i % 3


@pytest.fixture(scope="module")
def tiny_dir(tfds, tmp_path_factory):
    """`attrvis_tiny_pics` prepared as array_record: images given as PIL images need no TensorFlow."""

    class AttrvisTinyPics(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict({
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "mask": tfds.features.Image(shape=(None, None, 3)),
                    "label": tfds.features.ClassLabel(names=_CLASSES),
                }),
                disable_shuffling=True,  # index i is the i-th generated example
            )

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in _SPLITS}

        def _generate_examples(self, split):
            for i in range(_SPLITS[split]):
                image, mask, label = _tiny_example(split, i)
                yield i, {"image": Image.fromarray(image), "mask": Image.fromarray(mask), "label": label}

    root = tmp_path_factory.mktemp("tfds")
    AttrvisTinyPics(data_dir=str(root), file_format="array_record").download_and_prepare()
    return root


@pytest.fixture
def tiny(tiny_dir, monkeypatch):
    monkeypatch.setenv("ATTRVIS_TFDS_DIR", str(tiny_dir))
    monkeypatch.delenv("TFDS_DATA_DIR", raising=False)
    return tiny_dir


def test_tfds_real_ids_labels_pixels_and_default_split(tiny):
    records = resolve_sources("tfds:attrvis_tiny_pics")  # default split: validation
    assert [r.id for r in records] == [f"tfds:attrvis_tiny_pics/validation/{i}" for i in range(6)]
    assert [r.label for r in records] == [_CLASSES[i % 3] for i in range(6)]
    for i, record in enumerate(records):
        np.testing.assert_array_equal(record.load(), _tiny_example("validation", i)[0])
    (train2,) = resolve_sources("tfds:attrvis_tiny_pics:train@2:")
    assert train2.id == "tfds:attrvis_tiny_pics/train/2" and train2.label == "bird"
    np.testing.assert_array_equal(train2.load(), _tiny_example("train", 2)[0])


def test_tfds_real_slices(tiny):
    ids = [r.id for r in resolve_sources("tfds:attrvis_tiny_pics:validation@2:5")]
    assert ids == [f"tfds:attrvis_tiny_pics/validation/{i}" for i in (2, 3, 4)]
    assert len(resolve_sources("tfds:attrvis_tiny_pics:validation@:2")) == 2
    assert len(resolve_sources("tfds:attrvis_tiny_pics:validation@0:6")) == 6
    assert "has 6 examples" in _error("tfds:attrvis_tiny_pics:validation@0:7")
    assert "selects no examples" in _error("tfds:attrvis_tiny_pics:validation@6:")
    assert "Unknown split 'valid'" in _error("tfds:attrvis_tiny_pics:valid")
    # Overlapping ranges are deduplicated; limit cuts after that.
    both = resolve_sources(["tfds:attrvis_tiny_pics:validation@0:3", "tfds:attrvis_tiny_pics:validation@1:5"],
                           limit=4)
    assert [r.id.rsplit("/", 1)[1] for r in both] == ["0", "1", "2", "3"]


def test_tfds_real_is_lazy(tiny, tfds, monkeypatch):
    decoded = []
    real = tfds.features.Image.decode_example_np
    monkeypatch.setattr(tfds.features.Image, "decode_example_np",
                        lambda self, ex: decoded.append(1) or real(self, ex))
    read = []
    source_getitem = sources._TfdsSplit.example
    monkeypatch.setattr(sources._TfdsSplit, "example",
                        lambda self, i, keep: read.append(i) or source_getitem(self, i, keep))
    records = resolve_sources(["tfds:attrvis_tiny_pics:validation@1:6"], limit=2)
    assert decoded == []  # labels read, no image decoded
    assert sorted(read) == [1, 2]  # records past the limit are not even read
    assert [r.label for r in records] == ["dog", "bird"]
    records[1].load()
    assert len(decoded) == 1  # the image only, not the mask


def test_tfds_records_pickle_and_reopen(tiny):
    record = resolve_sources("tfds:attrvis_tiny_pics:validation@4:5")[0]
    again = pickle.loads(pickle.dumps(record))
    assert again == record
    np.testing.assert_array_equal(again.load(), _tiny_example("validation", 4)[0])


def test_tfds_data_dir_env(tiny_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("ATTRVIS_TFDS_DIR", raising=False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tiny_dir))
    assert len(resolve_sources("tfds:attrvis_tiny_pics:train")) == 3
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))  # ATTRVIS_TFDS_DIR wins over TFDS_DATA_DIR
    assert "not prepared" in _error("tfds:attrvis_tiny_pics:train")
    monkeypatch.setenv("ATTRVIS_TFDS_DIR", str(tiny_dir))
    assert len(resolve_sources("tfds:attrvis_tiny_pics:train")) == 3


def test_tfds_not_prepared_and_unknown(tfds, tmp_path, monkeypatch):
    monkeypatch.setenv("ATTRVIS_TFDS_DIR", str(tmp_path))
    message = _error("tfds:imagenet2012:validation@0:100")
    assert "not prepared" in message and "ILSVRC2012_img_val.tar" in message
    assert str(tmp_path / "downloads" / "manual") in message
    assert "--file_format=array_record" in message and "ATTRVIS_TFDS_DIR" in message
    message = _error("tfds:caltech_birds2011:test@0:10")
    assert "not prepared" in message and "tfds build caltech_birds2011" in message
    assert "closest: 'imagenet2012'" in _error("tfds:imagenet_2012:validation")


# ----------------------------------------------------------------------------------------------
# tensorflow-datasets: the real imagenet2012 and caltech_birds2011 builders, mocked examples


def _mock(tfds, n):
    return tfds.testing.mock_data(num_examples=n, policy=tfds.testing.MockPolicy.USE_CODE)


def test_tfds_mock_imagenet2012_validation(tfds):
    with _mock(tfds, 12):
        records = resolve_sources("tfds:imagenet2012:validation@3:9")
        reference = tfds.data_source("imagenet2012", split="validation")
        names = reference.dataset_info.features["label"].names
        assert len(names) == 1000 and names[0] == "n01440764"
        assert [r.id for r in records] == [f"tfds:imagenet2012/validation/{i}" for i in range(3, 9)]
        for i, record in zip(range(3, 9), records):
            example = reference[i]
            assert record.label == names[int(example["label"])]
            img = record.load()
            assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3
            np.testing.assert_array_equal(img, example["image"])
        assert "has 12 examples" in _error("tfds:imagenet2012:validation@10:13")
        assert "name one" in _error("tfds:imagenet2012")  # the mock knows no splits


def test_tfds_mock_caltech_birds2011(tfds):
    with _mock(tfds, 10):
        records = resolve_sources(["tfds:caltech_birds2011:test@0:10"], limit=7)
        reference = tfds.data_source("caltech_birds2011", split="test")
        assert [r.id for r in records] == [f"tfds:caltech_birds2011/test/{i}" for i in range(7)]
        for i, record in enumerate(records):
            example = reference[i]
            # Its ClassLabel has only indices: the name is the example's own label_name text.
            name = example["label_name"]
            assert record.label == (name.decode() if isinstance(name, bytes) else name)
            assert not record.label.isdigit()
            img = record.load()
            assert img.dtype == np.uint8 and img.shape == example["image"].shape and img.shape[2] == 3
            np.testing.assert_array_equal(img, example["image"])
