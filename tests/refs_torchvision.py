"""Import torchvision as the parity tests' reference, beside a CPU-only torch.

PyPI's torchvision wheel ships a C extension (`_C.so`) linked against CUDA libraries, which does
not load beside the CPU torch wheel; torchvision then fails at import time in
`torchvision._meta_registrations` ("operator torchvision::nms does not exist"), because it registers
fake (meta) kernels for the `nms` / `qnms` operators the extension would have defined. The model
definitions themselves (`torchvision.models.googlenet`, `resnet50`) are pure Python and need none
of the C operators, so defining just those two operator schemas is enough for them to import.
"""

from __future__ import annotations

import importlib

# The torch.library.Library that owns the stand-in schemas; it must stay alive (the registrations
# are undone when it is garbage-collected).
_SHIM = None


def import_torchvision():
    """Return the `torchvision` module, with the operator-schema shim only if a plain import fails.

    Idempotent: later calls return the already imported module.
    """
    global _SHIM
    import torch

    try:
        return importlib.import_module("torchvision")
    except RuntimeError as e:
        if "torchvision::" not in str(e):
            raise
    # A failed import leaves partial torchvision modules behind; drop them before retrying.
    import sys

    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    if _SHIM is None:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _SHIM = lib
    return importlib.import_module("torchvision")
