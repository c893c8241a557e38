"""The Python API's twin of test_bad_inputs.py: every bad input a library call can get, one row each
(the call, the AttrvisError subclass it must raise, a fragment of the message), and the rules
behind them tested as rules (every config field has a range, every ambiguous class name is refused,
a batch is treated as its images would be alone). Runs on the tiny random net (tests/tiny.py) and
files made here: seconds."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile

import jax
import numpy as np
import pytest
from PIL import Image

import attrvis_jax as av
from attrvis_jax import config as cfg
from attrvis_jax.data import network_input, network_inputs, read_image
from attrvis_jax.errors import AmbiguousNameError, AttrvisError, ImageError, UnknownNameError
from attrvis_jax.labels import class_index, imagenet1k, read_label_file
from tiny import SIZE, tiny_model

FAST = dict(layer="conv2", spatial_steps=2, channel_steps=2, steps=4)


@pytest.fixture(scope="module")
def tiny():
    return tiny_model()


@pytest.fixture(scope="module")
def photo():
    return np.random.default_rng(0).random((SIZE, SIZE, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def saved(tiny, photo, tmp_path_factory):
    """A good attribution file, and its bytes."""
    path = tmp_path_factory.mktemp("attr") / "a.npz"
    av.attribute(tiny, photo, target=3, **FAST).save(path)
    return path


# ---- images --------------------------------------------------------------------------------------
IMAGE_CASES = [
    ("float-0-255", lambda p: p * 255, "looks like 0..255: divide by 255"),
    ("float-0-255-batch", lambda p: (p * 255)[None], "looks like 0..255"),
    ("float-0-255-other-size", lambda p: np.repeat(p * 255, 2, axis=0), "looks like 0..255"),
    ("normalized", lambda p: (p - 0.45) / 0.22, "looks normalized (mean/std)"),
    ("nan", lambda p: np.where(p > 0.5, np.nan, p), "contains NaN or infinite values"),
    ("nan-batch", lambda p: np.stack([p, np.full_like(p, np.inf)]), "contains NaN or infinite values"),
    ("5-d", lambda p: p[None, None], "expected an image array"),
    ("two-channels", lambda p: p[..., :2], "expected an image array"),
    ("empty-list", lambda p: [], "an empty batch of images"),
]


@pytest.mark.parametrize("make,fragment", [c[1:] for c in IMAGE_CASES], ids=[c[0] for c in IMAGE_CASES])
def test_bad_image_arrays_are_refused(tiny, photo, make, fragment):
    with pytest.raises(ImageError, match=None) as e:
        av.attribute(tiny, make(photo), target=3, **FAST)
    assert fragment in str(e.value)


def test_a_batch_is_its_images_alone(tiny):
    """A float batch of another size is preprocessed image by image, as each would be alone (it was
    attributed at its own 100 px before); one at the network's size is taken as it is."""
    rng = np.random.default_rng(1)
    other = rng.random((2, 50, 40, 3)).astype(np.float32)
    batch, single = network_inputs(other, tiny.spec.preprocess)
    assert not single and batch.shape == (2, SIZE, SIZE, 3)
    for i in range(2):
        np.testing.assert_array_equal(batch[i], network_input(other[i], tiny.spec.preprocess))
        np.testing.assert_array_equal(batch[i], tiny.load_image(other[i]))
    sized = rng.random((2, SIZE, SIZE, 3)).astype(np.float32)
    np.testing.assert_array_equal(network_inputs(sized, tiny.spec.preprocess)[0], sized)
    one, single = network_inputs(sized[0], tiny.spec.preprocess)
    assert single and one.shape == (1, SIZE, SIZE, 3)
    mixed, single = network_inputs([other[0], (sized[1] * 255).astype(np.uint8)], tiny.spec.preprocess)
    assert not single and mixed.shape == (2, SIZE, SIZE, 3)
    attrs = av.attribute(tiny, other, target=3, **FAST)
    assert [a.values.shape for a in attrs] == [av.attribute(tiny, other[0], target=3, **FAST).values.shape] * 2


def test_network_inputs_may_overshoot_like_a_cubic_resize(tiny, saved):
    """A network input made by a resize that does not clip (InceptionV1's bicubic stretch) lies a
    little outside [0, 1]: it must stay usable, while 0..255 does not."""
    x = np.random.default_rng(2).random((SIZE, SIZE, 3)).astype(np.float32) * 1.5 - 0.25
    tiny.logits(x)  # [-0.25, 1.25]: no error
    with pytest.raises(ImageError, match="0..255"):
        tiny.logits(np.clip(x, 0, 1) * 255)
    with pytest.raises(ImageError, match="normalized"):
        tiny.logits((np.clip(x, 0, 1) - 0.45) / 0.22)
    with pytest.raises(AttrvisError, match="float images in"):
        tiny.logits((np.clip(x, 0, 1) * 255).astype(np.uint8))
    with pytest.raises(ImageError, match="the visualizations"):
        av.evaluate_visualizations(tiny, av.Attribution.load(saved), x[None] * 255)


def _frames(path, fmt, n=3, **kw):
    frames = [Image.fromarray(np.full((24, 24, 3), 40 * i, np.uint8)) for i in range(n)]
    frames[0].save(path, fmt, save_all=True, append_images=frames[1:], **kw)
    return path


@pytest.mark.parametrize("fmt,ext,fragment", [("GIF", "gif", "animation of 3 frames"),
                                              ("WEBP", "webp", "animation of 3 frames"),
                                              ("PNG", "png", "animation of 3 frames"),
                                              ("TIFF", "tif", "a file of 3 pages")])
def test_several_pictures_in_one_file_are_refused(tmp_path, fmt, ext, fragment):
    if fmt == "WEBP" and not Image.registered_extensions().get(".webp"):
        pytest.skip("PIL without WebP")
    path = _frames(tmp_path / f"x.{ext}", fmt)
    with pytest.raises(ImageError, match=fragment):
        read_image(path)
    one = tmp_path / f"one.{ext}"
    Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(one, fmt)
    assert read_image(one).shape == (24, 24, 3)  # a single frame of the same format is fine


def test_a_camera_mpo_reads_its_primary_picture(tmp_path):
    """MPO (camera JPEGs with a preview after the picture) holds 2 frames by design: frame 0 is the
    picture, and it is read without complaint."""
    Image.init()
    if "MPO" not in Image.SAVE:
        pytest.skip("PIL cannot write MPO")
    a = np.full((24, 24, 3), 200, np.uint8)
    path = tmp_path / "camera.jpg"
    Image.fromarray(a).save(path, "MPO", save_all=True, append_images=[Image.fromarray(a // 2)])
    with Image.open(path) as img:
        assert img.format == "MPO" and img.n_frames == 2
    assert abs(read_image(path).mean() - 200 / 255) < 0.02


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_pipe_is_refused_not_read(tmp_path, tiny):
    """A FIFO would block forever: every file input says it is not a regular file, at once."""
    pipe = tmp_path / "pipe.jpg"
    os.mkfifo(pipe)
    for call in (lambda: read_image(pipe), lambda: read_label_file(pipe, 10),
                 lambda: av.Attribution.load(pipe)):
        with pytest.raises(AttrvisError, match="not a regular file"):
            call()


# ---- targets, keys, class names ------------------------------------------------------------------
CALL_CASES = [
    ("target-float", dict(target=3.0), UnknownNameError, "a class is a name or a whole-number index, got 3.0"),
    ("target-bool", dict(target=True), UnknownNameError, "got True (bool)"),
    ("target-out-of-range", dict(target=10), AttrvisError, "class index 10 out of range"),
    ("targets-too-few", dict(target=[1, 2]), AttrvisError, "2 targets for 1 images"),
    ("key-float", dict(key=1.5), AttrvisError, "key must be a PRNG key (jax.random.key(n)) or an int seed"),
    ("key-bool", dict(key=True), AttrvisError, "key must be a PRNG key"),
    ("key-past-32-bits", dict(key=2**40), AttrvisError, "key must be in [0, 4_294_967_295] (JAX seeds are 32-bit)"),
    ("key-negative", dict(key=-1), AttrvisError, "key must be in [0, 4_294_967_295]"),
    ("key-string", dict(key="5"), AttrvisError, "key must be a PRNG key"),
    ("key-batch-for-one", dict(key=jax.random.split(jax.random.key(0), 3)), AttrvisError, "3 keys for 1 images: give one key, or one per image"),
]


@pytest.mark.parametrize("kwargs,error,fragment", [c[1:] for c in CALL_CASES], ids=[c[0] for c in CALL_CASES])
def test_bad_call_arguments(tiny, photo, kwargs, error, fragment):
    with pytest.raises(error) as e:
        av.attribute(tiny, photo, **{"target": 3, **FAST, **kwargs})
    assert fragment in str(e.value)


def test_int_keys_are_seeds(tiny, photo):
    """key=5 is jax.random.key(5), for attribute and visualize alike; key=0 is the default."""
    a = av.attribute(tiny, photo, target=3, key=5, **FAST)
    np.testing.assert_array_equal(a.values, av.attribute(tiny, photo, target=3, key=jax.random.key(5), **FAST).values)
    obj = av.objectives.channel(tiny, "conv2", 1)
    run = dict(perturbation="none", steps=2, seeds=1)
    np.testing.assert_array_equal(av.visualize(tiny, obj, key=0, **run).images,
                                  av.visualize(tiny, obj, **run).images)
    np.testing.assert_array_equal(av.visualize(tiny, obj, key=np.int64(7), **run).images,
                                  av.visualize(tiny, obj, key=jax.random.key(7), **run).images)
    with pytest.raises(AttrvisError, match="key must be in"):
        av.visualize(tiny, obj, key=2**32, **run)


def test_no_class_name_is_resolved_by_position():
    """Every name of the ImageNet list is either one class's (its whole label, or a synonym of no
    other class) or refused, listing every class that has it: never the first of several."""
    labels = imagenet1k()
    synonyms = {}
    for i, label in enumerate(labels):
        for name in {label, *(s.strip() for s in label.split(","))}:
            synonyms.setdefault(name.lower(), set()).add(i)
    refused = 0
    for name, owners in synonyms.items():
        whole = [i for i, label in enumerate(labels) if label.lower() == name]
        try:
            got = class_index(labels, name, 1000)
        except AmbiguousNameError as e:
            refused += 1
            assert len(whole) != 1 and len(owners) > 1, name
            assert all(f"[{i} " in str(e) for i in owners), (name, str(e))
            continue
        assert got in owners and (whole == [got] or owners == {got}), (name, got, owners)
    assert refused >= 10  # crane, panther, horn, tub, ...: names of several classes


def test_class_name_examples():
    labels = imagenet1k()
    assert class_index(labels, "cardigan", 1000) == 474  # the whole label "cardigan" wins
    assert class_index(labels, "Cardigan Welsh corgi", 1000) == 264
    assert class_index(labels, "n02012849", 1000) == 134  # the WordNet id of the bird crane
    assert class_index(labels, "n03126707", 1000) == 517
    with pytest.raises(AmbiguousNameError, match=r"\[134 n02012849\] 'crane', \[517 n03126707\] 'crane'"):
        class_index(labels, "crane", 1000)
    with pytest.raises(AmbiguousNameError, match="pass the index$"):  # another label list: no WordNet ids
        class_index(("a, x", "b, x", "c"), "x", 3)


def test_a_label_file_with_a_byte_order_mark(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("\n".join(["tench, Tinca tinca", *[f"c{i}" for i in range(1, 10)]]) + "\n", encoding="utf-8-sig")
    assert path.read_bytes()[:3] == b"\xef\xbb\xbf"
    assert read_label_file(path, 10)[0] == "tench, Tinca tinca"


# ---- configs: every numeric field has its range ------------------------------------------------
CONFIGS = (cfg.AttributionConfig, cfg.RenderConfig, cfg.RunOptions, cfg.SweepConfig, cfg.CatalogConfig)


def _numeric(cls):
    return [f for f in dataclasses.fields(cls)
            if f.type.removesuffix(" | None") in ("int", "float", "tuple[int, ...]")]


def test_every_numeric_config_field_has_a_range():
    for cls in CONFIGS:
        missing = [f.name for f in _numeric(cls) if f.name not in cfg.RANGES.get(cls.__name__, {})]
        assert not missing, (cls.__name__, missing)


def _outside(r: cfg.Range):
    """Values just outside a range, and absurd ones (what a typo or a wrong unit gives)."""
    lo = r.lo if r.lo_open else r.lo - (1 if isinstance(r.lo, int) else 1e-6 * max(1, abs(r.lo)))
    hi = r.hi if r.hi_open else r.hi + (1 if isinstance(r.hi, int) else 1e-6 * max(1, abs(r.hi)))
    return [lo, hi, -1e30 if isinstance(r.lo, float) else -(2**70), 2**70]


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_values_outside_each_range_are_refused_and_its_ends_accepted(cls):
    for field in _numeric(cls):
        r = cfg.RANGES[cls.__name__][field.name]
        integral = field.type.startswith(("int", "tuple"))
        wrap = (lambda v: (v,)) if field.type.startswith("tuple") else (lambda v: v)
        for value in _outside(r):
            value = int(value) if integral else float(value)
            with pytest.raises(AttrvisError, match=f"{field.name} must be in"):
                cls(**{field.name: wrap(value)})
        for end, open_ in ((r.lo, r.lo_open), (r.hi, r.hi_open)):
            if not open_:
                cls(**{field.name: wrap(int(end) if integral else float(end))})


def test_reported_render_values():
    for field, value, fragment in (("lambda_growth", -1.0, "[1, 10]"), ("lr", 1e9, "(0, 1]"),
                                   ("lr_decay", 1e6, "(0, 1]"), ("init_sd", 1e30, "(0, 1]")):
        with pytest.raises(AttrvisError, match="must be in") as e:
            av.RenderConfig(**{field: value})
        assert fragment in str(e.value)


# ---- attribution files ---------------------------------------------------------------------------
def _rewrite(src, dst, change):
    """dst: src's npz with its members changed by change(dict name -> bytes)."""
    with zipfile.ZipFile(src) as z:
        members = {n: z.read(n) for n in z.namelist()}
    change(members)
    with zipfile.ZipFile(dst, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return dst


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _meta(change):
    def edit(members):
        meta = json.loads(str(np.load(io.BytesIO(members["meta.npy"]))))
        change(meta)
        members["meta.npy"] = _npy(np.array(json.dumps(meta)))
    return edit


FILE_CASES = [
    ("truncated", lambda src, dst: dst.write_bytes(src.read_bytes()[: src.stat().st_size // 2]) and dst,
     "is not an attribution file, or it is damaged"),
    ("bad-crc", lambda src, dst: dst.write_bytes(_flip_stored_byte(src.read_bytes())) and dst, "damaged"),
    ("empty", lambda src, dst: dst.write_bytes(b"") is not None and dst, "damaged"),
    ("missing-array", lambda src, dst: _rewrite(src, dst, lambda m: m.pop("positive.npy")), "it lacks positive"),
    ("missing-meta-field", lambda src, dst: _rewrite(src, dst, _meta(lambda m: m.pop("beta"))), "it lacks beta"),
    ("meta-wrong-kind", lambda src, dst: _rewrite(src, dst, _meta(lambda m: m.update(target="tabby"))),
     "target is 'tabby'"),
    ("wrong-shape", lambda src, dst: _rewrite(src, dst, lambda m: m.update({"heatmap.npy": _npy(np.zeros((3, 3)))})),
     "heatmap has shape (3, 3)"),
    ("bad-config", lambda src, dst: _rewrite(src, dst, _meta(lambda m: m["config"].update(steps=-4))),
     "its config: steps must be in"),
    ("other-format", lambda src, dst: _rewrite(src, dst, _meta(lambda m: m.update(format=99))),
     "unsupported attribution file format 99"),
    ("a-folder", lambda src, dst: dst.mkdir() or dst, "is a directory"),
]


def _flip_stored_byte(data: bytes) -> bytes:
    """Change one byte inside the first member's compressed data: its CRC no longer matches."""
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        info = z.infolist()[0]
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + info.compress_size // 2
    return data[:start] + bytes([data[start] ^ 0xFF]) + data[start + 1:]


@pytest.mark.parametrize("make,fragment", [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_bad_attribution_files(saved, tmp_path, make, fragment):
    path = make(saved, tmp_path / "bad.npz")
    with pytest.raises(AttrvisError) as e:
        av.Attribution.load(path)
    assert fragment in str(e.value) and str(path) in str(e.value)


def test_the_good_file_loads(saved):
    assert av.Attribution.load(saved).target == 3
