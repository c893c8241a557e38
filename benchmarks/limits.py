"""Distance from the machine's limit: achieved FLOP/s of the render step and of the plain network,
against this machine's measured float32 matmul rate; where the step's time goes.

    python benchmarks/limits.py [--quick] [--model inception_v1] [--layer mixed4d] [--batches 1 8]
                                [--rounds 3] [--no-profile] [--json out.json]

FLOPs are XLA's own count for one call of the compiled executable (`compiled.cost_analysis()`:
convolutions and dots as 2·MACs, plus one per elementwise op); achieved = FLOPs / median wall time.
Peak = the best of 7 calls of a 2048×2048 float32 `jnp.dot` on the same 2 threads, measured at the
start and at the end of the run (the larger is used: the machine is shared, the best call is the
closest to what the cores can do). Because a shared machine gives a process an unknown share of the
cores, the same fraction is also given on a CPU-time basis: (FLOPs / process CPU seconds) against
the matmul's best FLOPs per CPU second — how well each core-second we did get was used. Random weights, default render config (pyramid perturbation with
the mask, "code" transforms), synthetic R⁺.

Timed, interleaved over `--rounds` (each call waits for its result; medians):
  step      the engine's jitted single step (what engine="loop" runs), all seeds
  chunk     the engine's lax.scan over 4 steps (engine="scan", the default), per step
  net f+b   the network's forward + input gradient to the layer at the same batch (plain)
  net fwd   the forward alone
  parts     the step's pieces, each jitted alone with its own backward, at the step's shapes:
            param (spectrum → image, mask), perturb (noise pyramid + composition), transform
            (fixed-shape affine resampling), network+objective (forward to the layer, the
            attribution-weighted loss, input gradient), adam (optax update of the spectrum).

Profile (unless --no-profile): `jax.profiler.trace` of a few calls of the step and of the scan
chunk; XLA:CPU records one event per executed HLO op (thunk). Each op is classified from the
compiled HLO: its kind (convolution / FFT / gather / scatter / reduce-window / reduce / layout copy /
elementwise fusion; YNNPACK fusions count as convolution or dot from their fused computation) and
its place (network or render code; forward or backward from the op's JAX name). Tables give the
summed op time per class (ops can overlap on the 2 threads, so shares are of summed op time).
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import shutil
import tempfile
import time

import common  # noqa: F401  (threads first)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from attrvis_jax import load_model  # noqa: E402
from attrvis_jax.config import RenderConfig, RunOptions  # noqa: E402
from attrvis_jax.render import loss as objective_mod  # noqa: E402
from attrvis_jax.render.param import image_and_mask  # noqa: E402
from attrvis_jax.render.transforms import TRANSFORMS, apply_transform, sample_params  # noqa: E402

CHUNK = 4


# ---- timed executables ---------------------------------------------------------------------------
class Timed:
    """A compiled callable with its FLOPs and a way to run it once (waiting for the result)."""

    def __init__(self, name, fn, args, per: float = 1.0, threaded: bool = False, flops: float | None = None):
        t0 = time.perf_counter()
        compiled = isinstance(fn, jax.stages.Compiled)
        self.exe = fn if compiled else jax.jit(fn).lower(*args).compile()
        self.compile_s = time.perf_counter() - t0
        self.name, self.args, self.per, self.threaded = name, list(args), per, threaded
        self.flops = common.cost_flops(self.exe) / per if flops is None else flops
        self.once()  # warm-up

    def once(self):
        out = self.exe(*self.args)
        if self.threaded:  # (variables, carry, ...) -> (carry, losses): feed the donated carry back
            self.args[1] = out[0]
        jax.block_until_ready(out)

    def sample(self):
        return [common.timed(self.once, per=self.per)]


def step_and_chunk(model, layer, r_plus, batch):
    config, options = RenderConfig(steps=2048), RunOptions(seeds=batch, chunk_size=CHUNK, snapshot_steps=())
    eng, variables, carry, seed_data, data = common.engine_state(model, layer, r_plus, config, options)
    t = jnp.int32(0)
    step_exe, step_compile = eng.compiled("step", variables, carry, seed_data, data, t)
    step = Timed("step", step_exe, (variables, carry, seed_data, data, t), threaded=True)
    step.compile_s = step_compile
    _, carry2, seed_data2, _ = common.engine_state(model, layer, r_plus, config, options)[1:]
    t0, stop = jnp.int32(0), jnp.int32(CHUNK)
    chunk_exe, chunk_compile = eng.compiled("chunk", variables, carry2, seed_data2, data, t0, stop)
    # XLA's cost analysis does not multiply a while loop's body by its trip count: use the step's.
    chunk = Timed("chunk", chunk_exe, (variables, carry2, seed_data2, data, t0, stop), per=CHUNK, threaded=True,
                  flops=step.flops)
    chunk.compile_s = chunk_compile
    return eng, step, chunk


def network_cases(model, layer, batch):
    size = model.input_size
    x = jnp.full((batch, size, size, 3), 0.5, jnp.float32)
    grad = Timed("net f+b", jax.grad(lambda v, x: jnp.sum(model.apply_features(v, x, layer)), argnums=1),
                 (model.variables, x))
    fwd = Timed("net fwd", lambda v, x: model.apply_features(v, x, layer), (model.variables, x))
    return grad, fwd


def part_cases(model, layer, r_plus, batch, eng):
    """The step's pieces at its shapes (seeds × 1 group), each with its backward."""
    c, n = eng.config, eng.size
    key = jax.random.key(0)
    keys = jax.random.split(key, batch)
    channels = 4 if c.has_mask else 3  # RGB + mask in one spectrum (the fft parameterization)
    spectrum = 0.01 * jax.random.normal(key, (batch, 1, channels, n, n // 2 + 1, 2))
    x = jnp.full((batch, 1, n, n, 3), 0.5)
    m = jnp.full((batch, 1, n, n, 1), 0.5)
    y = jnp.full((batch, 1, n, n, 4), 0.5)
    r = jnp.asarray(r_plus)[None]
    spec = TRANSFORMS[c.transform_set]

    def param_loss(s):
        xs, ms = jax.vmap(lambda s: image_and_mask(s, n, n, c.decay_power))(s)
        return jnp.sum(xs) + jnp.sum(ms)

    def perturb_loss(x, m, keys):
        return jnp.sum(jax.vmap(lambda x, m, k: eng.perturb(x, m, k))(x, m, keys))

    def transform_loss(y, keys):
        return jnp.sum(jax.vmap(lambda y, k: apply_transform(y, sample_params(k, spec), spec))(y, keys))

    def net_loss(y, variables):
        acts = model.net.apply(variables, y.reshape(batch, n, n, 4)[..., :3], stop=layer)
        return jnp.sum(-2.0 * objective_mod.attribution_score(acts, r, "mean"))

    opt = eng.opt
    params = {"spectrum": spectrum}
    state = jax.vmap(opt.init)(params)

    def adam(params, state, grads):
        updates, state = jax.vmap(opt.update)(grads, state, params)
        return optax.apply_updates(params, updates), state

    return [
        Timed("param", jax.grad(param_loss), (spectrum,)),
        Timed("perturb", jax.grad(perturb_loss, argnums=(0, 1)), (x, m, keys)),
        Timed("transform", jax.grad(transform_loss), (y, keys)),
        Timed("network+objective", jax.grad(net_loss), (y, model.variables)),
        Timed("adam", adam, (params, state, params)),
    ]


# ---- profile ------------------------------------------------------------------------------------
_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.*)$")


def hlo_index(text: str):
    """{instruction name: (opcode, called computation or None, JAX op name)} and
    {computation name: set of opcodes in it} from compiled HLO text."""
    instrs, comps, current = {}, collections.defaultdict(set), None
    for line in text.splitlines():
        if line and not line.startswith(" ") and "{" in line and ("%" in line or line.startswith("ENTRY")):
            parts = line.replace("ENTRY ", "").split()
            current = parts[0].lstrip("%")
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        name, rest = m.groups()
        rhs = rest.split(", metadata=")[0]
        op = re.match(r"([a-z][\w\-]*)\(", _strip_type(rhs))
        opcode = op.group(1) if op else "?"
        calls = re.search(r"calls=%([\w.\-]+)", rest)
        jax_name = re.search(r'op_name="([^"]*)"', rest)
        instrs[name] = (opcode, calls.group(1) if calls else None, jax_name.group(1) if jax_name else "")
        if current:
            comps[current].add(opcode)
    return instrs, comps


def _strip_type(rhs: str) -> str:
    """'f32[1,2]{1,0} fusion(%a), kind=...' -> 'fusion(%a), kind=...' (tuple types included)."""
    depth, i = 0, 0
    for i, ch in enumerate(rhs):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == " " and depth == 0:
            return rhs[i + 1:]
    return rhs


def classify(name: str, instrs, comps) -> tuple[str, str] | None:
    """(place, kind) of one executed op, or None for control ops whose children are recorded."""
    if name not in instrs:
        return None
    opcode, calls, jax_name = instrs[name]
    if opcode in ("while", "conditional", "call", "tuple", "get-tuple-element", "parameter", "constant", "bitcast"):
        return None
    inner = set(comps.get(calls, ())) if calls else {opcode}
    if opcode not in ("fusion",):
        inner.add(opcode)
    for probe, kind in (("convolution", "convolution"), ("dot", "dot"), ("fft", "fft"), ("scatter", "scatter"),
                        ("gather", "gather"), ("reduce-window", "reduce-window"), ("select-and-scatter", "select-and-scatter"),
                        ("reduce", "reduce"), ("sort", "sort"), ("rng-bit-generator", "rng")):
        if probe in inner:
            break
    else:
        ops = inner - {"parameter", "constant", "bitcast", "broadcast", "tuple", "get-tuple-element"}
        kind = "layout (copy/transpose)" if ops and ops <= {"copy", "transpose", "reshape", "slice", "pad", "concatenate"} else "elementwise"
    net = any(s in jax_name for s in ("InceptionV1", "ResNet", "EfficientNet", "GoogLeNet", "Net)"))
    direction = "bwd" if "transpose(" in jax_name else "fwd"
    place = f"{'network' if net else 'render'} {direction}" if jax_name else "unattributed"
    return place, kind


def profile(timed: Timed, calls: int = 3) -> dict:
    """Per-class summed op time (ms per step) over `calls` calls of a compiled executable."""
    instrs, comps = hlo_index(timed.exe.as_text())
    d = tempfile.mkdtemp(prefix="attrvis_prof_")
    try:
        t0 = time.perf_counter()
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for _ in range(calls):
                timed.once()
        wall = time.perf_counter() - t0
        path = glob.glob(f"{d}/**/perfetto_trace.json.gz", recursive=True)[0]
        events = json.load(gzip.open(path))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    events = events["traceEvents"] if isinstance(events, dict) else events
    by_class, by_op = collections.Counter(), collections.Counter()
    for e in events:
        if e.get("ph") != "X":
            continue
        cls = classify(e["name"], instrs, comps)
        if cls is None:
            continue
        ms = e.get("dur", 0) / 1e3 / calls / timed.per
        by_class[cls] += ms
        by_op[(e["name"], *cls, instrs[e["name"]][2].split("/")[-1])] += ms
    return {"wall_ms_per_step": 1e3 * wall / calls / timed.per, "op_ms_per_step": sum(by_class.values()),
            "classes": by_class, "ops": by_op}


# ---- main -----------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="batch 1, 1 round, no parts (< 2 minutes)")
    ap.add_argument("--model", default="inception_v1")
    ap.add_argument("--layer", default=None)
    ap.add_argument("--batches", nargs="*", type=int, default=None)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    batches = args.batches or ([1] if args.quick else [1, 8])
    rounds = 1 if args.quick else args.rounds
    info = common.machine_info()
    print(common.header(info), flush=True)
    peaks = [common.matmul_peak()]
    print(f"matmul 2048² float32: best {peaks[0]['gflops']:.1f} GFLOP/s (median {peaks[0]['median_gflops']:.1f}), "
          f"best {peaks[0]['gflops_per_cpu_s']:.1f} GFLOP per CPU-second", flush=True)

    model = load_model(args.model, weights="random")
    layer = model.resolve_layer(args.layer)
    r_plus = common.synthetic_r_plus(model.layer_shapes()[layer])
    report = {"machine": info, "model": args.model, "layer": layer, "batches": {}}
    for batch in batches:
        eng, step, chunk = step_and_chunk(model, layer, r_plus, batch)
        cases = [step, chunk, *network_cases(model, layer, batch)]
        if not args.quick:
            cases += part_cases(model, layer, r_plus, batch, eng)
        print(f"batch {batch}: compiled " + ", ".join(f"{c.name} {c.compile_s:.1f} s" for c in cases), flush=True)
        load0 = common.loadavg()
        samples = common.interleave({c.name: c.sample for c in cases}, rounds)
        out = {"load": f"{load0} → {common.loadavg()}", "cases": {}}
        for c in cases:
            s = common.summarize(samples[c.name])
            out["cases"][c.name] = {**s, "gflop": c.flops / 1e9, "compile_s": c.compile_s}
        if not args.no_profile:
            out["profile"] = {c.name: profile(c) for c in (step, chunk)}
        report["batches"][batch] = out
        print(f"batch {batch} done, load {out['load']}", flush=True)

    peaks.append(common.matmul_peak())
    peak = max(p["gflops"] for p in peaks)
    peak_cpu = max(p["gflops_per_cpu_s"] for p in peaks)
    info["load_end"] = common.loadavg()
    report["peak_gflops"] = [p["gflops"] for p in peaks]
    report["peak_gflops_per_cpu_s"] = [p["gflops_per_cpu_s"] for p in peaks]
    print(f"\nmatmul 2048² float32 peak: {' / '.join(f'{p:.1f}' for p in report['peak_gflops'])} GFLOP/s, "
          f"{' / '.join(f'{p:.1f}' for p in report['peak_gflops_per_cpu_s'])} GFLOP per CPU-second "
          f"(start / end); fractions below use {peak:.1f} and {peak_cpu:.1f}")
    rows = []
    for batch, out in report["batches"].items():
        for name, c in out["cases"].items():
            achieved = c["gflop"] / c["wall_s"]
            per_cpu = c["gflop"] / c["cpu_s"]
            rows.append([batch, name, f"{c['gflop']:.2f}", f"{c['wall_s']:.3f}", f"{c['cpu_s']:.3f}",
                         f"{achieved:.1f}", f"{achieved / peak:.0%}", f"{per_cpu:.1f}", f"{per_cpu / peak_cpu:.0%}",
                         out["load"]])
    print()
    print(common.markdown_table(["batch", "what", "GFLOP (XLA)", "wall s", "CPU s", "GFLOP/s", "of peak",
                                 "GFLOP per CPU-s", "of peak (CPU basis)", "load average"], rows))
    for batch, out in report["batches"].items():
        prof = out.get("profile")
        if not prof:
            continue
        classes = sorted({k for p in prof.values() for k in p["classes"]}, key=lambda k: -prof["step"]["classes"].get(k, 0))
        print(f"\nbatch {batch}: summed op time per step (ms) by class, from the XLA:CPU profile")
        print(common.markdown_table(
            ["place", "kind", "step (loop engine) ms", "chunk (scan engine) ms per step"],
            [[k[0], k[1], f"{prof['step']['classes'].get(k, 0):.1f}", f"{prof['chunk']['classes'].get(k, 0):.1f}"]
             for k in classes if max(p["classes"].get(k, 0) for p in prof.values()) >= 0.5]
            + [["all ops", "", f"{prof['step']['op_ms_per_step']:.1f}", f"{prof['chunk']['op_ms_per_step']:.1f}"],
               ["wall (profiled)", "", f"{prof['step']['wall_ms_per_step']:.1f}", f"{prof['chunk']['wall_ms_per_step']:.1f}"]]))
        for which in ("step", "chunk"):
            top = prof[which]["ops"].most_common(12)
            print(f"\nbatch {batch}, {which}: top ops (ms per step)")
            print(common.markdown_table(["op", "place", "kind", "JAX op", "ms"],
                                        [[k[0], k[1], k[2], k[3], f"{v:.1f}"] for k, v in top]))
        for p in prof.values():  # JSON: string keys
            p["classes"] = {" / ".join(k): v for k, v in p["classes"].items()}
            p["ops"] = {" / ".join(k): v for k, v in p["ops"].most_common(40)}
    print(f"\nload average: start {info['load_start']}, end {info['load_end']}")
    common.write_json(args.json, report)


if __name__ == "__main__":
    main()
