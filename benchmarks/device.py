"""The accelerator benchmark: one command, no network, JSON and a markdown table in `--out`.

    python benchmarks/device.py --out DIR [--budget-s 420] [--parts devices parity ...]
    python benchmarks/device.py --out DIR --dry-run      # every part at toy sizes on the CPU (tests/test_device_benchmark.py)
    python benchmarks/device.py --write-fixture          # regenerate the CPU logits fixture (on a CPU machine)

Parts (each writes its rows as soon as it ends, so a run cut short keeps what it measured; a part
that fails records its error and the others go on; a part that would start after `--budget-s`
is skipped and says so):

  devices    what jax (and torch, if installed) sees: backend, device kinds and count, versions.
  parity     each model's logits on the default device against float32 CPU values committed in
             benchmarks/fixtures/device_logits.npz (chelsea and a generated pattern; EfficientNet-
             Lite0 with its real weights, InceptionV1 and ResNet-50 with random weights from key 0,
             whose parameter checksum the fixture keeps), at the default matmul precision and at
             "highest"; also against this machine's own CPU backend, live (where the default device is
             not that CPU).
  steps      render s/step (scan engine, pyramid, mask) at 1, 8, 25 and 100 seeds for inception_v1
             (mixed4d), resnet50 (layer3.5) and efficientnet_lite0 (its default layer), 224², the
             default kernels of the backend; compile seconds apart.
  full       one full visualization: the default attribution (2049 + 4097 baseline steps, a
             200-point path) and 25 seeds × 2048 steps, on efficientnet_lite0 (chelsea, real
             weights) and inception_v1 (mixed4d); wall seconds of each half, compile included.
  lucent     lucent's `render_vis` (torch-lucent, CUDA torch when there is a GPU) on InceptionV1
             at mixed4d, batch 1/8/25, against ours at the same seeds with the same weights, in one
             interleaved run (the same cases as benchmarks/peers.py).
  kernels    each XLA:CPU rewrite (layers.REWRITES) against plain lax, 25 seeds: efficientnet_lite0
             for `depthwise`, inception_v1 for `max_pool` and `conv_gradient`; s/step and how far
             the images of the same seeds end apart (the same function: rounding only).
  dtype      float32 against bfloat16 compute (RenderConfig.compute_dtype), s/step at 25 seeds on the
             three models, and the visual result: Lite0 on chelsea with its real attribution, 8
             seeds, the two dtypes side by side (dtype_chelsea.png), directed PCC and top-5 per dtype.

Inputs come from the installed packages (Lite0's weights, scikit-image's photos) or are
generated; nothing is downloaded. Timings are medians over chunks after the first (the warm-up).
On a machine with a GPU this is meant to take under 8 minutes; `--budget-s` guards it.
"""

from __future__ import annotations

import os
import sys

DRY = "--dry-run" in sys.argv or "--write-fixture" in sys.argv
if DRY:  # the dry run and the fixture are the CPU's, whatever else the machine has
    os.environ["JAX_PLATFORMS"] = "cpu"
else:  # an accelerator host: let the CPU side (torch, input pipelines) use every core
    os.environ.setdefault("BENCH_THREADS", str(os.cpu_count() or 2))

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402

import common  # noqa: E402,F401  (threads first)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import attrvis_jax as av  # noqa: E402
import attrvis_jax.configs  # noqa: E402,F401
import attrvis_jax.metrics  # noqa: E402,F401
from attrvis_jax.config import AttributionConfig, RenderConfig, RunOptions  # noqa: E402
from attrvis_jax.models import layers  # noqa: E402

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "device_logits.npz"
MODELS = {"inception_v1": "mixed4d", "resnet50": "layer3.5", "efficientnet_lite0": None}
PARTS = ("devices", "parity", "steps", "full", "lucent", "kernels", "dtype")
# The peers' packages: a part that needs one that is missing is skipped with a note, not failed.
OPTIONAL = {"torch": "torch", "lucent": "torch-lucent", "kornia": "kornia", "torchvision": "torchvision"}
# Which model shows each rewrite: where the layer it replaces occurs.
REWRITE_MODELS = {"efficientnet_lite0": ("depthwise",), "inception_v1": ("max_pool", "conv_gradient")}


# ---- sizes: the real plan and the dry run's toy one -----------------------------------------------
class Plan:
    def __init__(self, dry: bool, models=tuple(MODELS), many: int | None = None):
        self.dry, self.models = dry, tuple(models)
        self.seeds = (2,) if dry else (1, 8, 25, 100)
        self.many = many or (2 if dry else 25)  # "25 seeds"
        # dry: 64² (Lite0's default layer is 2×2 there), the photo too; None: the model's own 224
        self.image_size = 64 if dry else None
        self.chunk = 2 if dry else 16
        self.chunks = 3  # chunks per timing call (the first is the warm-up)
        self.timing_steps = self.chunk * self.chunks
        self.render_chunk = 2 if dry else 64  # whole renders (full, dtype's picture)
        self.full_attribution = (AttributionConfig(spatial_steps=2, channel_steps=3, steps=4, chunk=4)
                                 if dry else AttributionConfig())
        # dry: the whole renders (full, dtype's picture) take the timing renders' size, seeds, chunks
        # and step count, so that they can run programs the steps and dtype parts compiled (the dry run
        # shares the compilation cache; how many programs it saves is not measured)
        self.full_steps = self.timing_steps if dry else 2048
        self.lucent_batches = (1,) if dry else (1, 8, 25)
        self.lucent_steps = 3 if dry else 6
        self.visual_seeds = self.seeds[0] if dry else min(8, self.many)
        self.visual_steps = self.full_steps if dry else 512

    def timing_config(self, **fields) -> RenderConfig:
        return RenderConfig(steps=self.timing_steps, image_size=self.image_size, **fields)

    def options(self, seeds: int) -> RunOptions:
        return RunOptions(seeds=seeds, chunk_size=self.chunk, snapshot_steps=())

    def photo(self, m) -> jax.Array:
        """chelsea in the model's preprocessing, at the plan's image size (renders from an
        attribution run at the size it was taken at)."""
        x = m.load_image(av.sample_image("chelsea"))
        if self.image_size and self.image_size != x.shape[0]:
            x = jax.image.resize(x, (self.image_size, self.image_size, 3), "linear", antialias=True)
        return x


_MODELS: dict = {}


def model(name: str, kernels: str = "auto"):
    """The benchmark's models: Lite0 with its packaged weights, the others random from key 0
    (initialized on the CPU, so the weights are the same whichever device runs them)."""
    if (name, "auto") not in _MODELS:
        if name == "efficientnet_lite0":
            m = av.load_model(name)
        else:
            with jax.default_device(jax.devices("cpu")[0]):
                m = av.load_model(name, weights="random", key=jax.random.key(0))
        m = dataclasses.replace(m, variables=jax.device_put(m.variables, jax.devices()[0]))
        _MODELS[name, "auto"] = m
    base = _MODELS[name, "auto"]
    return base if kernels == "auto" else dataclasses.replace(base, net=base.net.clone(kernels=kernels))


def layer_of(name: str) -> str:
    m = model(name)
    return m.resolve_layer(MODELS[name])


def checksum(variables) -> float:
    return float(sum(np.abs(np.asarray(leaf, np.float64)).sum() for leaf in jax.tree_util.tree_leaves(variables)))


def pattern_image(size: int = 224) -> np.ndarray:
    """A generated test image (no RNG: the same on every machine): smooth color gradients and rings."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    r = np.sqrt((x - 0.5) ** 2 + (y - 0.4) ** 2)
    return np.stack([x, 0.5 + 0.5 * np.sin(12 * r), y * (1 - x)], axis=-1).astype(np.float32)


def parity_inputs(m) -> np.ndarray:
    photo = m.load_image(av.sample_image("chelsea"))
    pattern = jax.image.resize(pattern_image(), photo.shape, "linear")
    return np.stack([np.asarray(photo), np.asarray(pattern)])


def cpu_logits(name: str) -> np.ndarray:
    m = model(name)
    cpu = jax.devices("cpu")[0]
    x = jax.device_put(parity_inputs(m), cpu)
    variables = jax.device_put(m.variables, cpu)
    with jax.default_matmul_precision("highest"):
        return np.asarray(jax.jit(m.net.apply)(variables, x))  # committed to the CPU: runs there


def write_fixture() -> None:
    if jax.default_backend() != "cpu":
        raise SystemExit("--write-fixture runs on a CPU machine (the fixture is the float32 CPU reference)")
    arrays = {}
    for name in MODELS:
        arrays[f"{name}/logits"] = cpu_logits(name)
        arrays[f"{name}/checksum"] = np.float64(checksum(model(name).variables))
    FIXTURE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(FIXTURE, **arrays, jax_version=np.str_(jax.__version__))
    print(f"wrote {FIXTURE} ({FIXTURE.stat().st_size / 1024:.0f} KiB)")


# ---- the parts ----------------------------------------------------------------------------------
def part_devices(plan: Plan) -> dict:
    devices = jax.devices()
    out = {"backend": jax.default_backend(), "count": len(devices),
           "kinds": sorted({d.device_kind for d in devices}), "jax": jax.__version__,
           "process_count": jax.process_count(), "auto_rewrites": sorted(layers.rewrites("auto"))}
    try:
        import torch

        out["torch"] = torch.__version__
        out["torch_cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        out["torch"] = None
    return out


def part_parity(plan: Plan) -> dict:
    fixture = np.load(FIXTURE)
    rows = []
    for name in MODELS:
        m = model(name)
        x = jnp.asarray(parity_inputs(m))
        ref = fixture[f"{name}/logits"]
        same_weights = bool(np.isclose(checksum(m.variables), float(fixture[f"{name}/checksum"]), rtol=1e-6))
        row = {"model": name, "fixture_weights_match": same_weights}
        # Against this machine's CPU, live: only where the default device is not that CPU (there, the
        # default-precision logits are the CPU's own, and comparing them to themselves tells nothing).
        references = {"fixture": ref}
        if jax.default_backend() != "cpu":
            references["cpu_live"] = cpu_logits(name)
        for precision in ("default",) if plan.dry else ("default", "highest"):  # the same program on a CPU
            with jax.default_matmul_precision(None if precision == "default" else "highest"):
                got = np.asarray(jax.jit(m.net.apply)(m.variables, x))
            for against, want in references.items():
                scale = float(np.max(np.abs(want)))
                row[f"{precision}_vs_{against}_max_rel"] = float(np.max(np.abs(got - want))) / scale
                row[f"{precision}_vs_{against}_top5_same"] = bool(all(
                    set(np.argsort(-g)[:5]) == set(np.argsort(-w)[:5]) for g, w in zip(got, want)))
        rows.append(row)
    return {"rows": rows}


def step_times(m, layer: str, config: RenderConfig, options: RunOptions, images: bool = False):
    """s/step, compile seconds and sample count of one render (W = a synthetic R⁺); with `images`,
    also the rendered pictures (composed), from the same call."""
    r_plus = common.synthetic_r_plus(m.layer_shapes(config.image_size)[layer])
    result, samples = common.visualize_timed(m, layer, r_plus, config, options)
    row = {"s_per_step": common.median([s["wall"] for s in samples]), "compile_s": result.timings["compile_s"],
           "n": len(samples)}
    return (row, result.composed) if images else row


def part_steps(plan: Plan) -> dict:
    rows = []
    for name in plan.models:
        m, layer = model(name), layer_of(name)
        for seeds in plan.seeds:
            rows.append({"model": name, "layer": layer, "seeds": seeds,
                         **step_times(m, layer, plan.timing_config(), plan.options(seeds))})
    return {"rows": rows}


def part_full(plan: Plan) -> dict:
    rows = []
    for name in [n for n in ("efficientnet_lite0", "inception_v1") if n in plan.models]:
        m, layer = model(name), layer_of(name)
        x = plan.photo(m)
        t0 = time.perf_counter()
        attr = av.attribute(m, x, layer=layer, target=int(np.argmax(np.asarray(m.logits(x[None]))[0])),
                            config=plan.full_attribution)
        t1 = time.perf_counter()
        vis = av.visualize(m, attr, RenderConfig(steps=plan.full_steps), seeds=plan.many,
                           chunk_size=plan.render_chunk, snapshot_steps=())
        t2 = time.perf_counter()
        rows.append({"model": name, "layer": layer, "attribution_s": t1 - t0, "render_s": t2 - t1,
                     "render_compile_s": vis.timings.get("compile_s"), "total_s": t2 - t0,
                     "seeds": plan.many, "steps": plan.full_steps, "mask_area": float(np.mean(vis.mask_area))})
    return {"rows": rows}


def part_lucent(plan: Plan) -> dict:
    import peers as lucent_ab  # torch, torch-lucent (and kornia where installed)

    torch = lucent_ab.torch
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lucent = lucent_ab.lucent_optvis()
    default, lean = lucent_ab.lucent_models()
    for p in lean.parameters():
        p.requires_grad_(False)
    ours = lucent_ab.our_model_from(default)
    default, lean = default.to(device), lean.to(device)
    r_plus = common.synthetic_r_plus(ours.layer_shapes(plan.image_size)[lucent_ab.LAYER])
    rows = []
    for batch in plan.lucent_batches:
        steps = plan.lucent_steps
        cases = {
            "lucent default": lucent_ab.LucentCase(lucent, default, r_plus, batch, steps, lean=False),
            "lucent lean": lucent_ab.LucentCase(lucent, lean, r_plus, batch, steps, lean=True),
            "ours, no mask": lucent_ab.OursCase(ours, r_plus, batch, steps, "none", "scan", plan.image_size),
            "ours, pyramid": lucent_ab.OursCase(ours, r_plus, batch, steps, "pyramid", "scan", plan.image_size),
        }
        samples = common.interleave(cases, 1 if plan.dry else 2)
        summary = {k: common.summarize(v) for k, v in samples.items()}
        for case, s in summary.items():
            rows.append({"batch": batch, "case": case, "device": device, "s_per_step": s["wall_s"], "n": s["n"],
                         "lucent_default_over_this": summary["lucent default"]["wall_s"] / s["wall_s"],
                         "lucent_lean_over_this": summary["lucent lean"]["wall_s"] / s["wall_s"]})
    return {"rows": rows, "torch_device": device, "standins": lucent[3]}


def part_kernels(plan: Plan) -> dict:
    rows = []
    for name, names in [(n, r) for n, r in REWRITE_MODELS.items() if n in plan.models]:
        layer = layer_of(name)
        config, options = plan.timing_config(), plan.options(plan.many)
        plain = None
        for kernels in ("lax", *names, "all"):
            m = model(name, kernels)
            times, images = step_times(m, layer, config, options, images=True)
            row = {"model": name, "kernels": kernels, **times}
            if plain is None:
                plain, base = images, row["s_per_step"]
            row["lax_over_this"] = base / row["s_per_step"]
            # Same function, another program: rounding differs, and Adam amplifies it over steps.
            row["mean_abs_image_diff_vs_lax"] = float(np.mean(np.abs(images - plain)))
            row["max_abs_image_diff_vs_lax"] = float(np.max(np.abs(images - plain)))
            rows.append(row)
    return {"rows": rows, "auto": sorted(layers.rewrites("auto"))}


def part_dtype(plan: Plan, out: Path) -> dict:
    from PIL import Image

    rows = []
    for name in plan.models:
        m, layer = model(name), layer_of(name)
        times = {dtype: step_times(m, layer, plan.timing_config(compute_dtype=dtype), plan.options(plan.many))
                 for dtype in ("float32", "bfloat16")}
        for dtype, t in times.items():
            rows.append({"model": name, "dtype": dtype, **t,
                         "float32_over_this": times["float32"]["s_per_step"] / t["s_per_step"]})
    # The visual comparison: Lite0's real attribution on chelsea, the same seeds in both dtypes.
    m = model("efficientnet_lite0")
    layer = layer_of("efficientnet_lite0")
    x = plan.photo(m)
    attr = av.attribute(m, x, layer=layer, target="tiger cat", config=av.configs.get("demo").attribution
                        if not plan.dry else plan.full_attribution)
    visual = {}
    composed = {}
    for dtype in ("float32", "bfloat16"):
        vis = av.visualize(m, attr, RenderConfig(steps=plan.visual_steps, compute_dtype=dtype),
                           seeds=plan.visual_seeds, chunk_size=plan.render_chunk, snapshot_steps=())
        composed[dtype] = vis.composed
        metrics = av.evaluate_visualizations(m, attr, vis)
        visual[dtype] = {"pcc_directed_median": float(np.median(metrics.pcc_directed)),
                         "top5": float(np.mean(metrics.top5_hit)), "mask_area": float(np.mean(vis.mask_area))}
    visual["mean_abs_diff"] = float(np.mean(np.abs(composed["float32"] - composed["bfloat16"])))
    visual["seeds"], visual["steps"] = plan.visual_seeds, plan.visual_steps
    sheet = np.concatenate([np.concatenate(list(composed[d]), axis=1) for d in ("float32", "bfloat16")], axis=0)
    Image.fromarray((np.clip(sheet, 0, 1) * 255).round().astype(np.uint8)).save(out / "dtype_chelsea.png")
    visual["sheet"] = "dtype_chelsea.png (top row float32, bottom bfloat16)"
    return {"rows": rows, "visual": visual}


# ---- the report ---------------------------------------------------------------------------------
def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def markdown(report: dict) -> str:
    lines = [f"# benchmarks/device.py{' --dry-run' if report['dry_run'] else ''}", "",
             f"{report['when']}; {report['host']}", ""]
    for part in PARTS:
        result = report["parts"].get(part)
        if result is None:
            continue
        lines += [f"## {part} ({result.get('seconds', 0):.0f} s)", ""]
        if "error" in result or "skipped" in result:
            lines += [result.get("error") or result["skipped"], ""]
            continue
        body = {k: v for k, v in result.items() if k not in ("seconds", "rows")}
        rows = result.get("rows") or []
        if rows:
            columns = list(dict.fromkeys(k for row in rows for k in row))
            lines += [common.markdown_table(columns, [[_fmt(row.get(c, "")) for c in columns] for row in rows]), ""]
        if body:
            lines += ["```", json.dumps(body, indent=1, default=str), "```", ""]
    return "\n".join(lines)


def write(out: Path, report: dict) -> None:
    for name, text in (("device.json", json.dumps(report, indent=1, default=str)), ("device.md", markdown(report))):
        tmp = out / f".{name}.tmp"
        tmp.write_text(text)
        tmp.replace(out / name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="folder for device.json, device.md and the pictures")
    ap.add_argument("--dry-run", action="store_true", help="every part at toy sizes (on the CPU)")
    ap.add_argument("--parts", nargs="*", choices=PARTS, default=list(PARTS))
    ap.add_argument("--models", nargs="*", choices=tuple(MODELS), default=list(MODELS),
                    help="the models of the steps, full, kernels and dtype parts (dtype's picture is Lite0's)")
    ap.add_argument("--many", type=int, default=None,
                    help="seeds of the kernels, dtype and full parts (default 25; e.g. 1 to run them on a CPU)")
    ap.add_argument("--budget-s", type=float, default=420.0, help="start no part after this many seconds")
    ap.add_argument("--write-fixture", action="store_true", help=f"regenerate {FIXTURE.name} (CPU only)")
    args = ap.parse_args()
    if args.write_fixture:
        return write_fixture()
    if args.out is None:
        ap.error("--out is required")
    if args.dry_run:  # the dry run (a test) shares the drivers' compilation cache; timed runs compile cold
        from attrvis_jax.apps import compile_cache

        compile_cache.enable()
    args.out.mkdir(parents=True, exist_ok=True)
    plan = Plan(args.dry_run, args.models, args.many)
    info = common.machine_info()
    report = {"dry_run": args.dry_run, "when": time.strftime("%Y-%m-%d %H:%M:%S"), "host": common.header(info),
              "machine": info, "parts": {}}
    start = time.perf_counter()
    for part in args.parts:
        if time.perf_counter() - start > args.budget_s:
            report["parts"][part] = {"skipped": f"skipped: the {args.budget_s:.0f} s budget was spent"}
            write(args.out, report)
            continue
        t0 = time.perf_counter()
        print(f"[{t0 - start:6.1f} s] {part} ...", flush=True)
        try:
            fn = globals()[f"part_{part}"]
            result = fn(plan, args.out) if part == "dtype" else fn(plan)
        except ModuleNotFoundError as e:
            if (e.name or "").split(".")[0] not in OPTIONAL:
                raise
            result = {"skipped": f"skipped: {e.name} is not installed here (the {part} part compares against it; "
                                 f"pip install {OPTIONAL[e.name.split('.')[0]]})"}
            print(result["skipped"], flush=True)
        except Exception as e:  # one part's failure must not lose the others' numbers
            result = {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(limit=6)}
            print(result["traceback"], file=sys.stderr, flush=True)
        result["seconds"] = time.perf_counter() - t0
        report["parts"][part] = result
        write(args.out, report)
    report["seconds"] = time.perf_counter() - start
    write(args.out, report)
    print(markdown(report))
    failed = [p for p, r in report["parts"].items() if "error" in r]
    if failed:
        raise SystemExit(f"parts failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
