"""Read PyTorch ``.pth`` checkpoints into numpy arrays, safely and without importing torch.

Two on-disk formats exist:

* zip (the default since torch 1.6): ``<archive>/data.pkl`` holds the pickled object, each storage
  is the raw bytes of ``<archive>/data/<key>``, and ``<archive>/byteorder`` says "little" or "big"
  (absent: little, as torch assumes).
* legacy (``_use_new_zipfile_serialization=False`` and every file from torch < 1.6): a stream of
  pickles -- magic number, protocol version 1001, a sys_info dict, the object, the list of storage
  keys -- then, per key, a little-endian int64 element count and the storage's little-endian bytes.

The tar format of the first torch releases is refused with an error.

A pickle can run any code while it loads, so every pickle goes through `_SafeUnpickler`: it
resolves only the few torch globals that describe tensors, each to a stand-in defined here that
merely records what the pickle asked for (a `_PendingTensor`), and refuses anything else before it
can be called. The tensors are then cut out of the storage bytes with numpy.

Dtypes: float32/64/16, int64/32/16/8, uint8/16/32/64, bool and complex64/128 keep their type.
bfloat16 (and float8) come back as float32, which holds them exactly, because numpy has no native
bfloat16 and `torch_to_flax` casts to float32 anyway. Every array is a fresh C-contiguous copy, also
when tensors share a storage, so editing one never changes another.
"""

from __future__ import annotations

import collections
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

import ml_dtypes
import numpy as np
from numpy.lib.stride_tricks import as_strided

from attrvis_jax.errors import WeightsError

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001

# Element types by torch storage class and by torch dtype name (aliases included).
_STORAGE_DTYPES: dict[str, Any] = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "BFloat16Storage": ml_dtypes.bfloat16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
    "ComplexFloatStorage": np.complex64,
    "ComplexDoubleStorage": np.complex128,
}
_TORCH_DTYPES: dict[str, Any] = {
    "float32": np.float32, "float": np.float32,
    "float64": np.float64, "double": np.float64,
    "float16": np.float16, "half": np.float16,
    "bfloat16": ml_dtypes.bfloat16,
    "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
    "float8_e5m2": ml_dtypes.float8_e5m2,
    "int64": np.int64, "long": np.int64,
    "int32": np.int32, "int": np.int32,
    "int16": np.int16, "short": np.int16,
    "int8": np.int8,
    "uint8": np.uint8, "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64,
    "bool": np.bool_,
    "complex64": np.complex64, "cfloat": np.complex64,
    "complex128": np.complex128, "cdouble": np.complex128,
}
# Types numpy cannot compute with comfortably; float32 represents all their values exactly.
_WIDEN = {np.dtype(ml_dtypes.bfloat16), np.dtype(ml_dtypes.float8_e4m3fn), np.dtype(ml_dtypes.float8_e5m2)}


class _Corrupt(ValueError):
    """The pickle is well-formed but does not describe tensors the way torch writes them."""


# --- stand-ins for the allowed globals ---------------------------------------------------------
# All are NamedTuples: immutable and without a __dict__, so a pickle's BUILD opcode cannot alter
# them, and none can be reached from a pickle except through `_ALLOWED`.


class _StorageType(NamedTuple):
    """Stand-in for torch.FloatStorage and friends: only the element type matters."""

    name: str
    dtype: np.dtype


class _TorchDtype(NamedTuple):
    """Stand-in for a torch dtype such as torch.float32."""

    name: str
    dtype: np.dtype


class _StorageRef(NamedTuple):
    """A storage named by a persistent id: a window of the bytes stored under `key`."""

    key: str
    dtype: np.dtype  # element type the storage was saved with
    byte_offset: int  # legacy storage views start inside their root storage
    nbytes: int


class _PendingTensor(NamedTuple):
    """What a tensor rebuild asked for; turned into an array once the storage bytes are known."""

    storage: _StorageRef
    dtype: np.dtype
    offset: int  # in elements of `dtype`
    size: tuple[int, ...]
    stride: tuple[int, ...]
    negate: bool
    conjugate: bool


class _Global(NamedTuple):
    """An allowed callable global; calling it runs `fn`, a function of this module."""

    qualname: str
    fn: Callable[..., Any]

    def __call__(self, *args: Any) -> Any:
        return self.fn(*args)


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and v >= 0 for v in value):
        raise _Corrupt(f"tensor {what} {value!r} is not a tuple of non-negative integers")
    return tuple(int(v) for v in value)


def _tensor(
    storage: Any, dtype: Any, offset: Any, size: Any, stride: Any, metadata: Any = None
) -> _PendingTensor:
    if not isinstance(storage, _StorageRef):
        raise _Corrupt(f"tensor storage is a {type(storage).__name__}, not a storage")
    if not isinstance(offset, int) or offset < 0:
        raise _Corrupt(f"tensor storage offset {offset!r} is not a non-negative integer")
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(size) != len(stride):
        raise _Corrupt(f"tensor size {size} and stride {stride} differ in length")
    # Lazy negation / conjugation bits (torch._neg_view, .conj()): the bytes hold the base values.
    flags = metadata if isinstance(metadata, dict) else {}
    negate, conjugate = bool(flags.get("neg")), bool(flags.get("conj"))
    return _PendingTensor(storage, np.dtype(dtype), int(offset), size, stride, negate, conjugate)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any) -> _PendingTensor:
    dtype = storage.dtype if isinstance(storage, _StorageRef) else np.uint8
    return _tensor(storage, dtype, offset, size, stride)


def _rebuild_tensor_v2(
    storage: Any,
    offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any = False,
    hooks: Any = None,
    metadata: Any = None,
) -> _PendingTensor:
    dtype = storage.dtype if isinstance(storage, _StorageRef) else np.uint8
    return _tensor(storage, dtype, offset, size, stride, metadata)


def _rebuild_tensor_v3(
    storage: Any,
    offset: Any,
    size: Any,
    stride: Any,
    requires_grad: Any,
    hooks: Any,
    dtype: Any,
    metadata: Any = None,
) -> _PendingTensor:
    # v3 carries the dtype itself (uint16, float8, ...) and usually sits on an untyped storage.
    if not isinstance(dtype, _TorchDtype):
        raise _Corrupt(f"tensor dtype {dtype!r} is not a torch dtype")
    return _tensor(storage, dtype.dtype, offset, size, stride, metadata)


def _rebuild_parameter(
    data: Any, requires_grad: Any = False, hooks: Any = None, state: Any = None
) -> _PendingTensor:
    # An nn.Parameter is its tensor for our purposes; requires_grad, hooks and state do not matter.
    if not isinstance(data, _PendingTensor):
        raise _Corrupt(f"parameter data is a {type(data).__name__}, not a tensor")
    return data


def _ordered_dict(*args: Any) -> collections.OrderedDict:
    # A real OrderedDict instance: nn.Module state dicts set a `_metadata` attribute on it.
    return collections.OrderedDict(*args)


def _torch_size(dims: Any = ()) -> tuple[int, ...]:
    return _int_tuple(dims, "size")


def _allowed_globals() -> dict[str, Any]:
    allowed: dict[str, Any] = {
        name: _Global(name, fn)
        for name, fn in {
            "collections.OrderedDict": _ordered_dict,
            "torch._utils._rebuild_tensor": _rebuild_tensor,
            "torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
            "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
            "torch._utils._rebuild_parameter": _rebuild_parameter,
            "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
            "torch.Size": _torch_size,
        }.items()
    }
    for name, dtype in _STORAGE_DTYPES.items():
        # torch.cuda.*Storage: old checkpoints saved from a GPU; the bytes are the same.
        for module in ("torch", "torch.cuda"):
            allowed[f"{module}.{name}"] = _StorageType(name, np.dtype(dtype))
    for qualname in ("torch.UntypedStorage", "torch.storage.UntypedStorage"):
        allowed[qualname] = _StorageType("UntypedStorage", np.dtype(np.uint8))
    for name, dtype in _TORCH_DTYPES.items():
        allowed[f"torch.{name}"] = _TorchDtype(name, np.dtype(dtype))
    return allowed


_ALLOWED = _allowed_globals()


def _text(value: Any) -> Any:
    # Checkpoints written by Python 2 may hold ids and keys as bytes.
    return value.decode("ascii", "replace") if isinstance(value, bytes) else value


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that builds only dicts, plain values and `_PendingTensor`s."""

    def __init__(self, file: io.BytesIO, source: str) -> None:
        super().__init__(file, encoding="utf-8")
        self.source = source
        self.storage_dtypes: dict[str, np.dtype] = {}  # root key -> element type, for legacy files

    def find_class(self, module: str, name: str) -> Any:
        qualname = f"{module}.{name}"
        if qualname in _ALLOWED:
            return _ALLOWED[qualname]
        shown = qualname if len(qualname) <= 120 else qualname[:117] + "..."
        raise WeightsError(
            f"refusing to load {self.source}: the pickle asks for {shown}, which could run code; "
            "only tensor data is allowed"
        )

    def persistent_load(self, pid: Any) -> _StorageRef:
        # zip: ('storage', type, key, location, numel); legacy adds view_metadata.
        if not isinstance(pid, tuple) or not pid or _text(pid[0]) != "storage":
            kind = _text(pid[0]) if isinstance(pid, tuple) and pid else type(pid).__name__
            raise WeightsError(
                f"refusing to load {self.source}: it holds a pickled {kind!r} object, not only tensors "
                "(a whole nn.Module?); save and load its state_dict() instead"
            )
        if len(pid) not in (5, 6):
            raise _Corrupt(f"storage id {pid!r} has {len(pid)} fields, expected 5 or 6")
        storage_type, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        key = _text(key)
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str):
            raise _Corrupt(f"storage id {pid!r} does not name a storage type and key")
        if not isinstance(numel, int) or numel < 0:
            raise _Corrupt(f"storage {key!r} has a bad element count {numel!r}")
        dtype = storage_type.dtype
        self.storage_dtypes.setdefault(key, dtype)
        if view is None:
            return _StorageRef(key, dtype, 0, numel * dtype.itemsize)
        # Storage views (torch < 0.4): (view key, offset, size) in elements of the root storage.
        if not (isinstance(view, tuple) and len(view) == 3):
            raise _Corrupt(f"storage {key!r} has bad view metadata {view!r}")
        if not all(isinstance(v, int) and v >= 0 for v in view[1:]):
            raise _Corrupt(f"storage {key!r} has bad view metadata {view!r}")
        return _StorageRef(key, dtype, view[1] * dtype.itemsize, view[2] * dtype.itemsize)


def _unpickle(data: io.BytesIO, source: str) -> tuple[Any, dict[str, np.dtype]]:
    unpickler = _SafeUnpickler(data, source)
    return unpickler.load(), unpickler.storage_dtypes


# --- choosing the state dict ----------------------------------------------------------------


def _all_tensors(value: Any) -> bool:
    if not isinstance(value, dict) or not value:
        return False
    return all(isinstance(v, _PendingTensor) for v in value.values())


def _flatten(tree: Mapping, prefix: str, out: dict[str, _PendingTensor], source: str) -> None:
    for key, value in tree.items():
        name = f"{prefix}{_text(key)}"
        if isinstance(value, _PendingTensor):
            if name in out:
                raise WeightsError(f"{source}: two tensors flatten to the same key {name!r}")
            out[name] = value
        elif isinstance(value, dict):
            _flatten(value, name + ".", out, source)
        # Anything else (epoch counters, config strings, lists) is not a weight: dropped.


def _pick_tensors(obj: Any, source: str) -> dict[str, _PendingTensor]:
    """The state dict inside a checkpoint: the object itself, its "state_dict"/"model", or a flattening."""
    if isinstance(obj, _PendingTensor):
        raise WeightsError(f"{source}: holds a single tensor, not a state dict of named tensors")
    if not isinstance(obj, dict):
        raise WeightsError(f"{source}: holds a {type(obj).__name__}, not a state dict of named tensors")
    if _all_tensors(obj):
        return {str(_text(k)): v for k, v in obj.items()}
    for wrapper in ("state_dict", "model"):
        if _all_tensors(obj.get(wrapper)):
            return {str(_text(k)): v for k, v in obj[wrapper].items()}
    out: dict[str, _PendingTensor] = {}
    _flatten(obj, "", out, source)
    if not out:
        raise WeightsError(f"{source}: the checkpoint holds no tensors")
    return out


# --- cutting tensors out of storage bytes ---------------------------------------------------------


def _byteswapped(chunk: memoryview | bytes, dtype: np.dtype) -> bytes:
    # Complex numbers swap each of their two halves, like torch's Storage.byteswap.
    unit = dtype.itemsize // 2 if dtype.kind == "c" else dtype.itemsize
    if unit <= 1:
        return bytes(chunk)
    return np.frombuffer(chunk, np.uint8).reshape(-1, unit)[:, ::-1].tobytes()


def _materialize(
    name: str, t: _PendingTensor, raw: memoryview | bytes, big_endian: bool, source: str
) -> np.ndarray:
    """Copy tensor `name` out of the bytes of its root storage, honouring offset, size and stride."""
    out_dtype = np.dtype(np.float32) if t.dtype in _WIDEN else t.dtype
    ref = t.storage
    if ref.byte_offset + ref.nbytes > len(raw):
        raise WeightsError(
            f"{source}: storage {ref.key!r} holds {len(raw)} bytes but the pickle declares "
            f"{ref.byte_offset + ref.nbytes} (truncated or corrupt file)"
        )
    window = memoryview(raw)[ref.byte_offset : ref.byte_offset + ref.nbytes]
    if 0 in t.size:
        return np.zeros(t.size, out_dtype)
    itemsize = t.dtype.itemsize
    span = t.offset + sum((n - 1) * s for n, s in zip(t.size, t.stride)) + 1  # elements touched
    if span * itemsize > len(window):
        raise WeightsError(
            f"{source}: tensor {name!r} needs {span * itemsize} bytes of storage {ref.key!r}, "
            f"which holds only {len(window)} (corrupt file)"
        )
    chunk = window[t.offset * itemsize : span * itemsize]
    if big_endian:
        chunk = _byteswapped(chunk, t.dtype)
    flat = np.frombuffer(chunk, dtype=t.dtype)
    view = as_strided(flat, shape=t.size, strides=tuple(s * itemsize for s in t.stride), writeable=False)
    array = np.array(view, dtype=out_dtype, order="C", copy=True)
    if t.conjugate:
        array = np.conj(array)
    if t.negate:
        array = np.negative(array)
    return array


def _materialize_all(
    tensors: dict[str, _PendingTensor],
    storage: Callable[[str], memoryview | bytes],
    big_endian: bool,
    source: str,
) -> dict[str, np.ndarray]:
    return {
        name: _materialize(name, t, storage(t.storage.key), big_endian, source) for name, t in tensors.items()
    }


# --- the two container formats ------------------------------------------------------------------


def _read_zip(zf: zipfile.ZipFile, source: str) -> dict[str, np.ndarray]:
    names = set(zf.namelist())
    pickles = sorted(n for n in names if n.endswith("data.pkl") and n.count("/") <= 1)
    if not pickles:
        raise WeightsError(f"{source}: a zip archive without data.pkl, so not a PyTorch checkpoint")
    prefix = pickles[0][: -len("data.pkl")]
    if any(n.startswith(prefix + "code/") for n in names):
        raise WeightsError(
            f"{source}: a TorchScript archive (torch.jit.save), not a checkpoint; "
            "load it with torch and torch.save() its state_dict()"
        )
    big_endian = False
    if prefix + "byteorder" in names:
        order = zf.read(prefix + "byteorder").strip()
        if order not in (b"little", b"big"):
            raise WeightsError(f"{source}: unknown byte order {order[:20]!r} in the archive")
        big_endian = order == b"big"
    obj, _ = _unpickle(io.BytesIO(zf.read(pickles[0])), source)
    tensors = _pick_tensors(obj, source)

    cache: dict[str, bytes] = {}

    def storage(key: str) -> bytes:
        if key not in cache:
            record = f"{prefix}data/{key}"
            if record not in names:
                raise WeightsError(f"{source}: the archive lacks the storage record {record!r} (corrupt)")
            cache[key] = zf.read(record)
        return cache[key]

    return _materialize_all(tensors, storage, big_endian, source)


def _read_legacy(raw: bytes, source: str) -> dict[str, np.ndarray]:
    stream = io.BytesIO(raw)
    magic, _ = _unpickle(stream, source)
    if magic != _LEGACY_MAGIC:
        raise WeightsError(f"{source}: a pickle, but not a PyTorch checkpoint (no torch magic number)")
    protocol, _ = _unpickle(stream, source)
    if protocol != _LEGACY_PROTOCOL:
        raise WeightsError(f"{source}: unsupported legacy checkpoint protocol {protocol!r} (expected 1001)")
    _unpickle(stream, source)  # sys_info: storages are little-endian whatever it says
    obj, dtypes = _unpickle(stream, source)
    keys, _ = _unpickle(stream, source)
    if not isinstance(keys, list) or not all(isinstance(_text(k), str) for k in keys):
        raise _Corrupt("the storage key list is not a list of strings")
    tensors = _pick_tensors(obj, source)

    # Storages follow back to back, each as int64 element count + bytes, in the order of `keys`.
    storages: dict[str, memoryview] = {}
    view, pos = memoryview(raw), stream.tell()
    for key in map(_text, keys):
        if key not in dtypes:
            raise _Corrupt(f"storage {key!r} is listed but no tensor uses it")
        if pos + 8 > len(raw):
            raise WeightsError(f"{source}: truncated file: it ends before storage {key!r}")
        count = int.from_bytes(raw[pos : pos + 8], "little", signed=True)
        nbytes = count * dtypes[key].itemsize
        if count < 0 or pos + 8 + nbytes > len(raw):
            raise WeightsError(
                f"{source}: truncated file: storage {key!r} needs {max(nbytes, 0)} bytes, "
                f"only {len(raw) - pos - 8} left"
            )
        storages[key] = view[pos + 8 : pos + 8 + nbytes]
        pos += 8 + nbytes

    def storage(key: str) -> memoryview:
        if key not in storages:
            raise WeightsError(f"{source}: storage {key!r} is used but its bytes are missing (corrupt file)")
        return storages[key]

    return _materialize_all(tensors, storage, False, source)


def read_pth(path: str | Path) -> dict[str, np.ndarray]:
    """Read the state dict of a PyTorch checkpoint as `{dotted key: numpy array}`, without torch.

    Accepts the zip and legacy formats. A checkpoint wrapping its weights (``{"state_dict": ...}``,
    ``{"model": ...}``, or other nested dicts) yields the inner dict, or the nested dicts flattened
    with "."; non-tensor entries are dropped. Raises `WeightsError` for a missing, unreadable,
    corrupt or unsafe file (one whose pickle asks for anything but tensor data).
    """
    source = str(path)
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{source}: no such file" if not path.exists() else f"{source}: not a file")
    try:
        with path.open("rb") as f:
            head = f.read(512)
        if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
            try:
                with zipfile.ZipFile(path) as zf:
                    return _read_zip(zf, source)
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as e:
                raise WeightsError(f"{source}: not a readable zip archive (truncated or corrupt): {e}") from e
        if head[257:262] == b"ustar":
            raise WeightsError(
                f"{source}: a tar-format checkpoint from a very old PyTorch, which is not supported; "
                "re-save it with a current torch: torch.save(torch.load(old), new)"
            )
        if head[:1] == b"\x80":
            return _read_legacy(path.read_bytes(), source)
        raise WeightsError(f"{source}: not a PyTorch checkpoint (it starts with {head[:8]!r})")
    except WeightsError:
        raise
    except OSError as e:
        raise WeightsError(f"{source}: cannot read: {e.strerror or e}") from e
    except _Corrupt as e:
        raise WeightsError(f"{source}: corrupt checkpoint: {e}") from e
    except (EOFError, pickle.UnpicklingError) as e:
        raise WeightsError(f"{source}: truncated or corrupt checkpoint ({type(e).__name__}: {e})") from e
    except Exception as e:  # a malformed pickle can fail in many ways; all mean a bad file
        raise WeightsError(f"{source}: corrupt checkpoint ({type(e).__name__}: {e})") from e
