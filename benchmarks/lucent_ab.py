"""Render-step speed against the PyTorch peer: lucent's `render_vis` vs our `visualize`, InceptionV1
at mixed4d, 224² parameterized images, the same random weights on both sides, interleaved A/B.

    python benchmarks/lucent_ab.py [--quick] [--batches 1 8] [--rounds 4] [--steps 8] [--json out.json]

What each side computes per step (one Adam update of B images; B = lucent's batch = our seeds):

lucent (torch-lucent 0.1.8, its own code end to end): `render_vis(model, objective,
    param_f=lambda: param.image(224, batch=B), thresholds=(steps,))` — lucent's FFT image
    parameterization with color decorrelation and sigmoid, its `standard_transforms` (pad 12,
    jitter 8, random scale 0.9–1.1, random rotation −10…10°, jitter 4) plus its InceptionV1
    preprocessing, the whole network run to the softmax (lucent reads mixed4d with a forward hook;
    it cannot stop there), backward, `torch.optim.Adam(lr=0.05)`.
    Objective (lucent `Objective`): −2·Σ_b mean_ij Σ_k f_bijk·R⁺_ijk at mixed4d, R⁺ resized
    bilinearly to the activation's spatial size (lucent's transforms make the network input 248–273
    px, so mixed4d is 16×16…18×18, not 14×14).
    Two lucent rows: "lucent default" — as its README uses it: lucent's default InceptionV1
    (`redirected_ReLU=True`: its ReLU backward does boolean indexing), weights still requiring grad
    (so torch also computes weight gradients), and the transformed image reaching the network at
    248–273 px; "lucent lean" — the same weights in an InceptionV1 built with
    `redirected_ReLU=False`, frozen (`requires_grad_(False)`), and `fixed_image_size=224` (lucent's
    own option: a bilinear resize to 224 after the transforms): the same network work as ours except
    the layers after mixed4d, which lucent always runs.

ours (`attrvis_jax.render.visualize`): FFT parameterization (+ mask channel), the perturbation,
    the "code" transform chain as one fixed-shape bilinear resampling to 224², the network up to
    mixed4d only, loss −2·mean_ij Σ_k f·R⁺ (+ the mask's area terms), optax Adam; seeds vmapped.
    Rows: "ours, no mask" (`perturbation="none"`: image only, the like-for-like row) and "ours,
    pyramid" (the default: image + mask + 6-level noise pyramid), each with the scan engine (the
    default) and the loop engine. R⁺ is a synthetic sparse positive map (speed does not depend on its values).

Weights: He-normal random weights in lucent's InceptionV1; the same state dict is loaded into the
lean lucent model and, through a .pth file, into ours, so all networks compute the same function.

Timing: each case runs `--steps` updates per call; a step's time is the difference of consecutive
timestamps (lucent: after each `optimizer.step`; ours: after each chunk of 2 updates, divided by 2),
the first of every call dropped (warm-up). Cases alternate within every round (A B C … A B C …;
`--rounds` at batch 1, one fewer above);
tables give medians of wall seconds per step and of process CPU seconds per step. Threads: torch 2
intra-op threads (1 inter-op), OMP_WAIT_POLICY=PASSIVE (torch's default spinning OpenMP barriers
collapse on an oversubscribed machine: 11 s instead of 0.9 s per batch-1 fwd+bwd at load average
7; benchmarks/common.py); the process is pinned to cores 0–1 before jax starts, and XLA:CPU
sizes its thread pools from that affinity (benchmarks/common.py). Compile time is excluded (ours compiles once per configuration, up front).

Stand-ins (test-only, for importing `lucent.optvis` in this environment; see `lucent_optvis()`):
kornia, IPython, decorator and torchvision are not importable here (torchvision is installed but
fails against this CPU torch). lucent imports them at module level; only three kornia functions
actually run in the render loop: `translate`, `get_rotation_matrix2d` and `warp_affine`. They are
re-implemented below with the semantics kornia documents (bilinear, zero padding, corners aligned)
on the same torch primitives kornia itself uses (`F.affine_grid` + `F.grid_sample`), so lucent's
transform cost is kept. `decorator.decorator`, `torchvision.transforms.Normalize` (unused for
InceptionV1) and `IPython.display` get minimal stand-ins. The model itself is imported with
tests/refs_lucent.py. The stand-ins live in `sys.modules` only while lucent.optvis is imported.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import math
import sys
import tempfile
import time
import types
import warnings
from pathlib import Path

import common  # noqa: F401  (threads first)

torch = common.torch_threads()
import torch.nn.functional as F  # noqa: E402

import numpy as np  # noqa: E402

from attrvis_jax import load_model  # noqa: E402
from attrvis_jax.config import RenderConfig, RunOptions  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import refs_lucent  # noqa: E402

LAYER = "mixed4d"
SIZE = 224


# ---- stand-ins for lucent.optvis's unavailable imports --------------------------------------------
def _affine_sample(src, src_from_dst_px, out_hw):
    """Sample src (B, C, H, W) at src_from_dst_px @ (x, y, 1) for every output pixel (bilinear, zeros
    outside, pixel centres at integer coordinates with corners aligned)."""
    b, c, h, w = src.shape
    oh, ow = out_hw

    def to_norm(hh, ww):  # pixel -> [-1, 1], corner pixels at ±1
        return src.new_tensor([[2.0 / max(ww - 1, 1), 0.0, -1.0], [0.0, 2.0 / max(hh - 1, 1), -1.0], [0.0, 0.0, 1.0]])

    theta = to_norm(h, w) @ src_from_dst_px @ torch.linalg.inv(to_norm(oh, ow))
    grid = F.affine_grid(theta[:, :2], [b, c, oh, ow], align_corners=True)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=True)


def _homogeneous(m):
    bottom = m.new_tensor([0.0, 0.0, 1.0]).expand(m.shape[0], 1, 3)
    return torch.cat([m, bottom], dim=1)


def _warp_affine(src, M, dsize, mode="bilinear", padding_mode="zeros", align_corners=True):
    """kornia.warp_affine: M (B, 2, 3) maps source pixels to destination pixels."""
    return _affine_sample(src, torch.linalg.inv(_homogeneous(M.expand(src.shape[0], 2, 3))), dsize)


def _get_rotation_matrix2d(center, angle, scale):
    """kornia.get_rotation_matrix2d: rotation by `angle` degrees (counter-clockwise) about `center`
    with per-axis `scale`, as OpenCV's getRotationMatrix2D; (B, 2, 3)."""
    a = torch.deg2rad(angle)
    sx, sy = scale[..., 0], scale[..., 1]
    cos, sin = torch.cos(a), torch.sin(a)
    cx, cy = center[..., 0], center[..., 1]
    row0 = torch.stack([sx * cos, sx * sin, cx - sx * cos * cx - sx * sin * cy], -1)
    row1 = torch.stack([-sy * sin, sy * cos, cy + sy * sin * cx - sy * cos * cy], -1)
    return torch.stack([row0, row1], 1)


def _translate(tensor, translation, mode="bilinear", padding_mode="zeros", align_corners=True):
    """kornia.geometry.transform.translate: shift by (dx, dy) pixels, same size."""
    b = tensor.shape[0]
    t = translation.expand(b, 2)
    m = torch.zeros(b, 2, 3, dtype=tensor.dtype)
    m[:, 0, 0] = m[:, 1, 1] = 1.0
    m[:, :, 2] = t
    return _warp_affine(tensor, m, tensor.shape[-2:])


def _decorator(caller):
    """decorator.decorator: turn caller(func, *args, **kw) into a decorator."""
    def deco(func):
        @functools.wraps(func)
        def wrapped(*args, **kwargs):
            return caller(func, *args, **kwargs)
        return wrapped
    return deco


class _Normalize:
    """torchvision.transforms.Normalize (only lucent's non-InceptionV1 path uses it)."""

    def __init__(self, mean, std):
        self.mean, self.std = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]

    def __call__(self, t):
        return (t - self.mean) / self.std


def _standins() -> dict[str, types.ModuleType]:
    mods = {}

    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        mods[name] = m
        return m

    transform = module("kornia.geometry.transform", translate=_translate)
    geometry = module("kornia.geometry", transform=transform)
    module("kornia", __version__="0.6.0", geometry=geometry, warp_affine=_warp_affine,
           get_rotation_matrix2d=_get_rotation_matrix2d)
    tv_transforms = module("torchvision.transforms", Normalize=_Normalize)
    module("torchvision", transforms=tv_transforms)
    display = module("IPython.display", display=lambda *a, **k: None, HTML=str)
    module("IPython", display=display)
    module("decorator", decorator=_decorator)
    return mods


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except Exception:  # torchvision raises RuntimeError against this torch
        return False


def lucent_optvis():
    """Import lucent.optvis (render, param, objectives), with stand-ins for whichever of kornia,
    torchvision, IPython and decorator cannot be imported; returns (render, param, objectives, names)."""
    needed = {top: mods for top, mods in (
        ("kornia", ("kornia", "kornia.geometry", "kornia.geometry.transform")),
        ("torchvision", ("torchvision", "torchvision.transforms")),
        ("IPython", ("IPython", "IPython.display")),
        ("decorator", ("decorator",)),
    ) if not _importable(top)}
    standins = _standins()
    names = [m for mods in needed.values() for m in mods]
    with refs_lucent.modules_replaced({name: standins[name] for name in names}):
        render = importlib.import_module("lucent.optvis.render")
        param = importlib.import_module("lucent.optvis.param")
        objectives = importlib.import_module("lucent.optvis.objectives")
    return render, param, objectives, sorted(needed)


# ---- models ------------------------------------------------------------------------------------
def lucent_models(seed: int = 0):
    """lucent's InceptionV1 with He-normal random weights (activations stay O(1..100)): the default
    build (redirected ReLUs) and a plain-ReLU build with the same weights."""
    torch.manual_seed(seed)
    cls = refs_lucent.inception_v1_class()
    default = cls(pretrained=False).eval()
    with torch.no_grad():
        for module in default.modules():
            if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
                module.weight.normal_(0.0, math.sqrt(2.0 / module.weight[0].numel()))
                module.bias.uniform_(-0.1, 0.1)
    plain = cls(pretrained=False, redirected_ReLU=False).eval()
    plain.load_state_dict(default.state_dict())
    return default, plain


def our_model_from(lucent):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "inception5h.pth"
        torch.save(lucent.state_dict(), path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # no label file next to the weights
            return load_model("inception_v1", weights=path)


# ---- one timed call per side --------------------------------------------------------------------
class LucentCase:
    def __init__(self, lucent, model, r_plus, batch: int, steps: int, lean: bool):
        self.lucent, self.model, self.batch, self.steps, self.lean = lucent, model, batch, steps, lean
        render, self.param, objectives, _ = lucent
        self.render = render
        r = torch.from_numpy(np.ascontiguousarray(np.transpose(r_plus, (2, 0, 1))))[None]
        r = r.to(next(model.parameters()).device)  # CUDA when the model is there (benchmarks/device.py)

        def attribution_objective(T):
            f = T(LAYER)
            w = r if f.shape[-2:] == r.shape[-2:] else F.interpolate(r, size=f.shape[-2:], mode="bilinear")
            return -2.0 * (f * w).sum(1).mean((1, 2)).sum()

        self.objective = objectives.Objective(attribution_objective, "attribution")
        self.input_sides = []  # side length of every image the network saw in this case's calls

    def __call__(self) -> list[common.Sample]:
        stamps = []

        def adam(params):
            opt = torch.optim.Adam(params, lr=5e-2)
            step = opt.step

            def timed_step(closure=None):
                out = step(closure)
                if params[0].is_cuda:  # CUDA runs asynchronously: stamp the work done, not queued
                    torch.cuda.synchronize()
                stamps.append((time.perf_counter(), common.cpu_seconds()))
                return out

            opt.step = timed_step
            return opt

        hook = self.model.register_forward_pre_hook(lambda m, args: self.input_sides.append(args[0].shape[-1]))
        try:
            self.render.render_vis(self.model, self.objective,
                                   param_f=lambda: self.param.image(SIZE, batch=self.batch), optimizer=adam,
                                   thresholds=(self.steps,), progress=False, show_image=False,
                                   fixed_image_size=SIZE if self.lean else None)
        finally:
            hook.remove()
        return [common.Sample(wall=t1 - t0, cpu=c1 - c0) for (t0, c0), (t1, c1) in zip(stamps, stamps[1:])]


class OursCase:
    CHUNK = 2

    def __init__(self, model, r_plus, batch: int, steps: int, perturbation: str, engine: str,
                 image_size: int | None = None):
        self.model, self.r_plus = model, r_plus
        self.config = RenderConfig(steps=steps, perturbation=perturbation, image_size=image_size)
        self.options = RunOptions(seeds=batch, chunk_size=self.CHUNK, engine=engine, snapshot_steps=())
        self.compile_s = None

    def __call__(self) -> list[common.Sample]:
        compile_s, samples = common.visualize_samples(self.model, LAYER, self.r_plus, self.config, self.options)
        if self.compile_s is None:
            self.compile_s = compile_s
        return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="batch 1, 4 steps, one round, ours only no-mask/loop and pyramid/scan (< 2 minutes on a quiet machine)")
    ap.add_argument("--batches", nargs="*", type=int, default=None, help="default 1 8 (quick: 1)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--steps", type=int, default=None, help="updates per call (default 8 at batch 1, 5 above)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    info = common.machine_info()
    print(common.header(info), flush=True)

    lucent = lucent_optvis()
    print(f"lucent.optvis imported with stand-ins for: {', '.join(lucent[3]) or 'nothing'}; "
          f"torch threads {torch.get_num_threads()}, OMP_WAIT_POLICY {info['omp_wait_policy']}, "
          f"process affinity {info['affinity']}", flush=True)
    torch_default, torch_lean = lucent_models()
    for p in torch_lean.parameters():
        p.requires_grad_(False)
    model = our_model_from(torch_default)
    r_plus = common.synthetic_r_plus(model.layer_shapes()[LAYER])

    report = {"machine": info, "rows": []}
    table = []
    for batch in args.batches or ([1] if args.quick else [1, 8]):
        steps = args.steps or (8 if batch == 1 else 5)
        rounds = args.rounds if batch == 1 else max(1, args.rounds - 1)
        if args.quick:
            steps, rounds = 4, 1
        cases = {
            "lucent default": LucentCase(lucent, torch_default, r_plus, batch, steps, lean=False),
            "lucent lean": LucentCase(lucent, torch_lean, r_plus, batch, steps, lean=True),
            "ours, no mask, scan": OursCase(model, r_plus, batch, steps, "none", "scan"),
            "ours, no mask, loop": OursCase(model, r_plus, batch, steps, "none", "loop"),
            "ours, pyramid, scan": OursCase(model, r_plus, batch, steps, "pyramid", "scan"),
            "ours, pyramid, loop": OursCase(model, r_plus, batch, steps, "pyramid", "loop"),
        }
        if args.quick:  # two of our four configurations: half the compile time
            del cases["ours, no mask, scan"], cases["ours, pyramid, loop"]
        # No separate warm-up: the first step of every call is dropped, and ours compiles before
        # its first step (compile time reported apart).
        load0 = common.loadavg()
        samples = common.interleave(cases, rounds, log=lambda s: print(s, flush=True))
        load1 = common.loadavg()
        summary = {name: common.summarize(s) for name, s in samples.items()}
        base = summary["lucent default"]["wall_s"]
        lean = summary["lucent lean"]["wall_s"]
        for name, s in summary.items():
            row = {"batch": batch, "case": name, **s, "load": f"{load0} → {load1}"}
            if isinstance(cases[name], OursCase):
                row["compile_s"] = cases[name].compile_s
            if name.startswith("lucent"):
                sides = cases[name].input_sides
                row["net_input_px_mean"] = float(np.mean(sides)) if sides else None
            report["rows"].append(row)
            table.append([batch, name, f"{s['wall_s']:.3f}", f"{s['cpu_s']:.3f}", s["n"],
                          f"{base / s['wall_s']:.2f}×", f"{lean / s['wall_s']:.2f}×",
                          f"{row.get('net_input_px_mean') or SIZE:.0f}"])
        print(f"batch {batch} done; load average {load0} → {load1}", flush=True)

    info["load_end"] = common.loadavg()
    print()
    print(common.markdown_table(
        ["batch", "case", "wall s/step", "CPU s/step", "n", "lucent default ÷ this", "lucent lean ÷ this",
         "net input px"], table))
    print(f"\nload average: start {info['load_start']}, end {info['load_end']}")
    common.write_json(args.json, report)


if __name__ == "__main__":
    main()
