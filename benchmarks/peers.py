"""How fast against the peers: the render step of this project, lucent's `render_vis` and
captum.optim's `InputOptimization`, InceptionV1 at mixed4d, 224², the same random weights on every
side, one interleaved run (A B C … A B C …), seconds per step and per seed at 1, 8 and 25 seeds.

    python benchmarks/peers.py [--captum-optim PATH] [--batches 1 8 25] [--rounds 2] [--steps 4]
                               [--lucent-lean] [--quick] [--json out.json]

One step = one Adam update of B images (B = the peers' batch = our seeds). What each side computes:

ours (`attrvis_jax.visualize`, the default engine: a scan over chunks of 2 updates): FFT
    parameterization with colour decorrelation and sigmoid, the "code" transform chain as one
    fixed-shape bilinear resampling to 224², the network up to mixed4d only, −2·mean_ij Σ_k f·R⁺,
    optax Adam. Rows: "ours, no mask" (`perturbation="none"`: the image alone, the like-for-like
    row), "ours, no mask, all seeds at once" (the same with `seed_batch` = B: one batch of B
    seeds, as before issue 30; at B = 1 it is the first row and is not repeated) and "ours,
    pyramid" (the method's default: image + mask + 6-level noise pyramid, more work than the peers
    do). R⁺ is a synthetic sparse positive map: speed does not depend on its values.
captum.optim (`--captum-optim PATH`, a checkout of pytorch/captum's `optim-wip` branch: it is not on
    PyPI; the row is skipped with a note without it): `InputOptimization(model,
    ChannelActivation(model.mixed4d, 0), NaturalImage((224, 224), batch=B))` with everything else
    its default: FFT parameterization + colour decorrelation (ToRGB "klt") + sigmoid, its default
    transforms (RandomScale 0.95–1.05, RandomSpatialJitter 16), Adam (lr 0.025); its
    `InceptionV1` (plain ReLUs, no input transform) with the weights frozen, run to the logits.
lucent (torch-lucent 0.1.8): `render_vis(model, objective, param_f=lambda: param.image(224,
    batch=B))`, its defaults otherwise: FFT + decorrelation + sigmoid, `standard_transforms`,
    Adam (lr 0.05), its InceptionV1 with redirected ReLUs and weights that still require grad, run
    to the softmax (lucent's transforms make the network see 248–273 px). Objective: the same
    weighted sum as ours at mixed4d (R⁺ resized to lucent's mixed4d). `--lucent-lean` adds
    "lucent lean": plain ReLUs, frozen weights, `fixed_image_size=224`.

The peers' objectives differ (one channel, a weighted sum of all): the network's work is the same.
Weights: He-normal random weights drawn in lucent's InceptionV1; captum's InceptionV1 and ours load
the same tensors (by name; ours through a .pth file), so every side computes the same network.

Timing: the peers run `--steps` updates per call, ours `--steps` chunks of 2 updates; a step's time
is the difference of consecutive timestamps (the peers: after each `optimizer.step()`; ours: after
each chunk, divided by 2), the first of every call dropped (the warm-up), so every case gives
`--steps` − 1 samples a call. Cases alternate within every round; medians
of wall seconds per step (and the process's CPU seconds per step). Threads: benchmarks/common.py
pins the process to BENCH_THREADS cores (default 2) before jax starts; torch gets as many intra-op
threads and OMP_WAIT_POLICY=PASSIVE (torch's default spinning barriers collapse on a shared
machine: 11 s instead of 0.9 s per batch-1 lucent step at load average 7). Our compile time is
excluded (reported apart).

Stand-ins (test-only, for importing `lucent.optvis` where kornia, IPython, decorator or torchvision
cannot be imported; see `lucent_optvis()`): lucent imports them at module level, and only three
kornia functions run in its render loop (`translate`, `get_rotation_matrix2d`, `warp_affine`); they
are re-implemented below with kornia's documented semantics (bilinear, zero padding, corners
aligned) on the torch primitives kornia itself uses (`F.affine_grid` + `F.grid_sample`), so
lucent's transform cost is kept. The stand-ins live in `sys.modules` only while lucent.optvis is
imported. lucent's model comes from tests/refs_lucent.py.
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


# ---- captum.optim ---------------------------------------------------------------------------------
def captum_optim(path: str | None):
    """captum.optim imported from a checkout of pytorch/captum's optim-wip branch at `path`, or
    (None, why) when there is none."""
    if not path:
        return None, "not run: give --captum-optim PATH, a checkout of pytorch/captum's optim-wip branch (not on PyPI)"
    if not (Path(path) / "captum" / "optim" / "__init__.py").is_file():
        return None, f"not run: {path} holds no captum/optim package (a checkout of the optim-wip branch?)"
    sys.path.insert(0, str(Path(path).resolve()))
    _named_tensor_standins()
    try:
        optim = importlib.import_module("captum.optim")
    except Exception as e:  # a checkout that does not import here: say why, run the rest
        return None, f"not run: importing captum.optim from {path} failed: {type(e).__name__}: {e}"
    return optim, None


def _named_tensor_standins() -> None:
    """torch 2.13 has no named tensors. captum.optim (2022) names an image's dimensions
    (`refine_names`) and drops the names again (`rename(None)`) before anything else sees them, and
    its colour decorrelation takes its unnamed path (the one it runs under TorchScript, the same
    arithmetic) when the names are None. Where torch lacks them, these stand-ins keep every name
    None; they are added to torch.Tensor for this process only."""
    if not hasattr(torch.Tensor, "refine_names"):
        torch.Tensor.refine_names = lambda self, *names: self
        torch.Tensor.rename = lambda self, *names, **renames: self
        torch.Tensor.names = property(lambda self: (None,) * self.dim())


def captum_model(optim, lucent_model):
    """captum.optim's InceptionV1 (its defaults: plain ReLUs, no input transform) with the lucent
    model's weights, matched by name, frozen."""
    model = optim.models.googlenet(pretrained=False).eval()
    blocks = {"1x1": "conv_1x1", "3x3_bottleneck": "conv_3x3_reduce", "3x3": "conv_3x3",
              "5x5_bottleneck": "conv_5x5_reduce", "5x5": "conv_5x5", "pool_reduce": "pool_proj"}
    stems = {"conv2d0": "conv1", "conv2d1": "conv2", "conv2d2": "conv3"}
    state = {}
    for name, tensor in lucent_model.state_dict().items():
        module, param = name.rsplit(".", 1)
        module = module.removesuffix("_pre_relu_conv")
        if module in stems:
            target = stems[module]
        elif module.startswith("mixed"):
            block, part = module.split("_", 1)
            target = f"{block}.{blocks[part]}"
        elif module == "softmax2_pre_activation_matmul":
            target = "fc"
        else:
            raise KeyError(f"no captum.optim module for lucent's {name}")
        state[f"{target}.{param}"] = tensor
    model.load_state_dict(state)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# ---- one timed call per side --------------------------------------------------------------------
def timed_adam(stamps: list):
    """A torch Adam factory whose step() records a (wall, CPU) stamp once the step is done."""
    def make(params, lr):
        opt = torch.optim.Adam(params, lr=lr)
        step = opt.step

        def timed_step(closure=None):
            out = step(closure)
            if params[0].is_cuda:  # CUDA runs asynchronously: stamp the work done, not queued
                torch.cuda.synchronize()
            stamps.append((time.perf_counter(), common.cpu_seconds()))
            return out

        opt.step = timed_step
        return opt
    return make


def samples_from(stamps) -> list[common.Sample]:
    return [common.Sample(wall=t1 - t0, cpu=c1 - c0) for (t0, c0), (t1, c1) in zip(stamps, stamps[1:])]


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
        make = timed_adam(stamps)
        hook = self.model.register_forward_pre_hook(lambda m, args: self.input_sides.append(args[0].shape[-1]))
        try:
            self.render.render_vis(self.model, self.objective,
                                   param_f=lambda: self.param.image(SIZE, batch=self.batch),
                                   optimizer=lambda params: make(params, 5e-2),
                                   thresholds=(self.steps,), progress=False, show_image=False,
                                   fixed_image_size=SIZE if self.lean else None)
        finally:
            hook.remove()
        return samples_from(stamps)


class CaptumCase:
    """captum.optim's InputOptimization as its tutorials use it, the defaults otherwise."""

    def __init__(self, optim, model, batch: int, steps: int):
        self.optim, self.model, self.batch, self.steps = optim, model, batch, steps
        self.input_sides = []

    def __call__(self) -> list[common.Sample]:
        optim = self.optim
        loss = optim.loss.ChannelActivation(self.model.mixed4d, 0)
        image = optim.images.NaturalImage((SIZE, SIZE), batch=self.batch).to(next(self.model.parameters()).device)
        run = optim.InputOptimization(self.model, loss, image)
        stamps = []
        hook = self.model.register_forward_pre_hook(lambda m, args: self.input_sides.append(args[0].shape[-1]))
        try:
            run.optimize(optim.optimization.n_steps(self.steps, show_progress=False),
                         optimizer=timed_adam(stamps)(list(run.parameters()), 0.025))
        finally:
            hook.remove()
        return samples_from(stamps)


class OursCase:
    CHUNK = 2

    def __init__(self, model, r_plus, batch: int, steps: int, perturbation: str, engine: str = "scan",
                 image_size: int | None = None, seed_batch: int | None = None):
        self.model, self.r_plus = model, r_plus
        # steps chunks of 2 updates: the first chunk is the warm-up, the other steps − 1 are samples
        # (as many as a peer's call gives)
        self.config = RenderConfig(steps=self.CHUNK * steps, perturbation=perturbation, image_size=image_size)
        self.options = RunOptions(seeds=batch, chunk_size=self.CHUNK, engine=engine, snapshot_steps=(),
                                  seed_batch=seed_batch)
        self.compile_s = None

    def __call__(self) -> list[common.Sample]:
        compile_s, samples = common.visualize_samples(self.model, LAYER, self.r_plus, self.config, self.options)
        if self.compile_s is None:
            self.compile_s = compile_s
        return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captum-optim", default=None, metavar="PATH",
                    help="a checkout of pytorch/captum's optim-wip branch (captum.optim is not on PyPI)")
    ap.add_argument("--batches", nargs="*", type=int, default=None, help="default 1 8 25 (quick: 1)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4, help="updates per call, the first dropped (default 4)")
    ap.add_argument("--lucent-lean", action="store_true", help="also lucent with frozen weights, plain ReLUs, 224 px")
    ap.add_argument("--quick", action="store_true", help="batch 1, 3 steps, one round (a few minutes)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    info = common.machine_info()
    print(common.header(info), flush=True)
    steal = common.StealMeter()

    lucent = lucent_optvis()
    optim, captum_note = captum_optim(args.captum_optim)
    print(f"lucent.optvis imported with stand-ins for: {', '.join(lucent[3]) or 'nothing'}; "
          f"captum.optim: {'from ' + args.captum_optim if optim else captum_note}; "
          f"torch threads {torch.get_num_threads()}, OMP_WAIT_POLICY {info['omp_wait_policy']}, "
          f"process affinity {info['affinity']}", flush=True)
    torch_default, torch_lean = lucent_models()
    for p in torch_lean.parameters():
        p.requires_grad_(False)
    captum_net = captum_model(optim, torch_default) if optim else None
    model = our_model_from(torch_default)
    r_plus = common.synthetic_r_plus(model.layer_shapes()[LAYER])

    report = {"machine": info, "captum_optim": args.captum_optim if optim else captum_note, "rows": []}
    table = []
    for batch in args.batches or ([1] if args.quick else [1, 8, 25]):
        steps, rounds = (3, 1) if args.quick else (args.steps, args.rounds)
        cases = {"ours, no mask": OursCase(model, r_plus, batch, steps, "none")}
        if batch > 1:
            cases["ours, no mask, all seeds at once"] = OursCase(model, r_plus, batch, steps, "none", seed_batch=batch)
        cases["ours, pyramid"] = OursCase(model, r_plus, batch, steps, "pyramid")
        if optim:
            cases["captum.optim"] = CaptumCase(optim, captum_net, batch, steps)
        cases["lucent"] = LucentCase(lucent, torch_default, r_plus, batch, steps, lean=False)
        if args.lucent_lean:
            cases["lucent lean"] = LucentCase(lucent, torch_lean, r_plus, batch, steps, lean=True)
        # No separate warm-up: the first step of every call is dropped, and ours compiles before
        # its first step (compile time reported apart).
        load0 = common.loadavg()
        samples = common.interleave(cases, rounds, log=lambda s: print(s, flush=True))
        load1 = common.loadavg()
        summary = {name: common.summarize(s) for name, s in samples.items()}
        ours = summary["ours, no mask"]["wall_s"]
        for name, s in summary.items():
            row = {"batch": batch, "case": name, **s, "per_seed_s": s["wall_s"] / batch, "load": f"{load0} → {load1}"}
            if isinstance(cases[name], OursCase):
                row["compile_s"] = cases[name].compile_s
            else:
                sides = cases[name].input_sides
                row["net_input_px_mean"] = float(np.mean(sides)) if sides else None
            report["rows"].append(row)
            table.append([batch, name, f"{s['wall_s']:.3f}", f"{s['wall_s'] / batch:.4f}", f"{s['cpu_s']:.3f}", s["n"],
                          f"{s['wall_s'] / ours:.2f}×", f"{row.get('net_input_px_mean') or SIZE:.0f}"])
        print(f"batch {batch} done; load average {load0} → {load1}", flush=True)

    info.update(load_end=common.loadavg(), steal=steal.read())
    print()
    print(common.markdown_table(
        ["seeds", "case", "wall s/step", "per seed", "CPU s/step", "n", "÷ ours, no mask", "net input px"], table))
    if not optim:
        print(f"\ncaptum.optim: {captum_note}")
    print(f"\nload average: start {info['load_start']}, end {info['load_end']}; {info['steal']}")
    common.write_json(args.json, report)


if __name__ == "__main__":
    main()
