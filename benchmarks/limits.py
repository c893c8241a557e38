"""How far from the machine's limit: the render step's FLOP rate against this machine's float32
matmul rate, at 1, 8 and 25 seeds; and (`--profile`) where a seed's time goes, per XLA op class.

    python benchmarks/limits.py [--workloads inception lite0] [--seeds 1 8 25] [--rounds 3]
                                [--profile] [--quick] [--json out.json]

Workloads (random weights, 224², a synthetic sparse R⁺ of the layer's shape):
  inception  InceptionV1 to mixed4d, no mask (`perturbation="none"`): issue 30's workload, the
             like-for-like one against the peers (benchmarks/peers.py).
  lite0      EfficientNet-Lite0 at its default layer, the method's objective with the pyramid
             perturbation and the mask (the library's default render).
At every seed count the step runs as `visualize` runs it (the seed batch chosen by
`render.optimize.auto_seed_batch`: on a CPU one seed a group at 224²) and, from 8 seeds on, also
with all seeds in one batch (`RunOptions(seed_batch=seeds)`, how it ran before), interleaved in one
process: each sample is one call of the engine's compiled 2-update chunk, medians over `--rounds`.

FLOPs: XLA's cost analysis of one seed's single step (`engine.step` at 1 seed: convolutions and dots
as 2·MAC plus one per elementwise op), times the seeds (a seed's work does not depend on the others;
XLA's count of a loop does not multiply its body by the trip count, so the grouped chunk's own count
would be wrong). Peak: the best of 7 float32 2048² `jnp.dot` calls on the same threads, at the start
and at the end of the run; the larger is used. "of peak" = FLOPs / median wall seconds / peak. The
machine is shared (other jobs, and the hypervisor's steal time, which benchmarks/common.py records):
compare rows of one run, not runs.

Profile (`--profile`): a `jax.profiler.trace` of 2 calls of each case's chunk; XLA:CPU records one
event per executed HLO op (thunk). Each op is classified from the compiled HLO (its kind:
convolution, FFT, gather, scatter, reduce-window, reduce, layout copy, elementwise; YNNPACK fusions
by what they fuse) and by its JAX name (network or render code, forward or backward); its time per
step is the median of its executions times how often it runs per step, so a preempted execution
does not count. Tables: ms per seed and step by class, at each seed count, grouped and at once.
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

from attrvis_jax import load_model  # noqa: E402
from attrvis_jax.config import RenderConfig, RunOptions  # noqa: E402

CHUNK = 2
WORKLOADS = {
    "inception": ("inception_v1", "mixed4d", RenderConfig(steps=2048, perturbation="none")),
    "lite0": ("efficientnet_lite0", None, RenderConfig(steps=2048)),
}


class Case:
    """One workload at one seed count and seed batch: its compiled chunk, run once per sample."""

    def __init__(self, workload: str, model, seeds: int, seed_batch: int | None, flops_per_seed: float):
        _, layer, config = WORKLOADS[workload]
        self.workload, self.seeds, self.seed_batch = workload, seeds, seed_batch
        self.once, self.compile_s, self.layer, self.exe = common.chunk_runner(
            model, seeds, CHUNK, layer, config, seed_batch)
        self.flops = flops_per_seed * seeds
        self.temp_bytes = self.exe.memory_analysis().temp_size_in_bytes
        self.once()  # warm-up
        self.name = f"{workload}, {seeds} seeds, " + ("all at once" if seed_batch else "as visualize runs it")

    def sample(self):
        return [common.timed(self.once, per=CHUNK)]


def seed_flops(model, workload: str) -> float:
    """XLA's FLOP count of one seed's render step (no loop in it: the count is complete)."""
    _, layer, config = WORKLOADS[workload]
    eng, variables, carry, seed_data, data = common.engine_state(
        model, model.resolve_layer(layer), common.synthetic_r_plus(model.layer_shapes()[model.resolve_layer(layer)]),
        config, RunOptions(seeds=1, chunk_size=CHUNK, snapshot_steps=()))
    exe, _ = eng.compiled("step", variables, carry, seed_data, data, jnp.int32(0))
    return common.cost_flops(exe)


# ---- profile --------------------------------------------------------------------------------------
_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.*)$")


def hlo_index(text: str):
    """{instruction name: (opcode, called computation or None, JAX op name)} and
    {computation name: set of opcodes in it} from compiled HLO text."""
    instrs, comps, current = {}, collections.defaultdict(set), None
    for line in text.splitlines():
        if line and not line.startswith(" ") and "{" in line and ("%" in line or line.startswith("ENTRY")):
            current = line.replace("ENTRY ", "").split()[0].lstrip("%")
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        name, rest = m.groups()
        op = re.match(r"([a-z][\w\-]*)\(", _strip_type(rest.split(", metadata=")[0]))
        opcode = op.group(1) if op else "?"
        calls = re.search(r"calls=%([\w.\-]+)", rest)
        jax_name = re.search(r'op_name="([^"]*)"', rest)
        instrs[name] = (opcode, calls.group(1) if calls else None, jax_name.group(1) if jax_name else "")
        if current:
            comps[current].add(opcode)
    return instrs, comps


def _strip_type(rhs: str) -> str:
    """'f32[1,2]{1,0} fusion(%a), kind=...' -> 'fusion(%a), kind=...' (tuple types included)."""
    depth = 0
    for i, ch in enumerate(rhs):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == " " and depth == 0:
            return rhs[i + 1:]
    return rhs


KINDS = (("convolution", "convolution"), ("dot", "dot"), ("fft", "fft"), ("scatter", "scatter"), ("gather", "gather"),
         ("reduce-window", "reduce-window"), ("select-and-scatter", "select-and-scatter"), ("reduce", "reduce"),
         ("sort", "sort"), ("rng-bit-generator", "rng"))
NETWORKS = ("InceptionV1", "ResNet", "EfficientNet", "GoogLeNet")


def classify(name: str, instrs, comps) -> tuple[str, str] | None:
    """(place, kind) of one executed op, or None for control ops whose children are recorded."""
    if name not in instrs:
        return None
    opcode, calls, jax_name = instrs[name]
    if opcode in ("while", "conditional", "call", "tuple", "get-tuple-element", "parameter", "constant", "bitcast"):
        return None
    inner = set(comps.get(calls, ())) if calls else {opcode}
    if opcode != "fusion":
        inner.add(opcode)
    kind = next((kind for probe, kind in KINDS if probe in inner), None)
    if kind is None:
        ops = inner - {"parameter", "constant", "bitcast", "broadcast", "tuple", "get-tuple-element"}
        layout = {"copy", "transpose", "reshape", "slice", "pad", "concatenate"}
        kind = "layout (copy/transpose)" if ops and ops <= layout else "elementwise"
    net = any(s in jax_name for s in NETWORKS)
    direction = "backward" if "transpose(" in jax_name else "forward"
    place = f"{'network' if net else 'render'} {direction}" if jax_name else "unattributed"
    return place, kind


def profile(case: Case, calls: int = 2) -> dict:
    """{(place, kind): ms per seed and step} from a trace of `calls` calls of the case's chunk; each
    op's time is the median of its executions times its executions per step."""
    instrs, comps = hlo_index(case.exe.as_text())
    d = tempfile.mkdtemp(prefix="attrvis_prof_")
    try:
        t0 = time.perf_counter()
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for _ in range(calls):
                case.once()
        wall = time.perf_counter() - t0
        events = json.load(gzip.open(glob.glob(f"{d}/**/perfetto_trace.json.gz", recursive=True)[0]))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    durations = collections.defaultdict(list)
    for e in events["traceEvents"] if isinstance(events, dict) else events:
        if e.get("ph") == "X" and classify(e["name"], instrs, comps) is not None:
            durations[e["name"]].append(e.get("dur", 0) / 1e3)
    classes = collections.Counter()
    steps = calls * CHUNK
    for name, ds in durations.items():
        classes[classify(name, instrs, comps)] += common.median(ds) * len(ds) / steps / case.seeds
    return {"classes": classes, "wall_ms_per_seed": 1e3 * wall / steps / case.seeds}


# ---- main -----------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", nargs="*", default=list(WORKLOADS), choices=list(WORKLOADS))
    ap.add_argument("--seeds", nargs="*", type=int, default=[1, 8, 25])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="also the per-op-class profile of every case")
    ap.add_argument("--quick", action="store_true", help="inception at 1 and 2 seeds, one round")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    workloads, seeds, rounds = (["inception"], [1, 2], 1) if args.quick else (args.workloads, args.seeds, args.rounds)
    info = common.machine_info()
    print(common.header(info), flush=True)
    steal = common.StealMeter()
    peaks = [common.matmul_peak()]
    print(f"matmul 2048² float32: best {peaks[0]['gflops']:.1f} GFLOP/s", flush=True)

    cases = []
    for workload in workloads:
        model = load_model(WORKLOADS[workload][0], weights="random")
        flops = seed_flops(model, workload)
        for n in seeds:
            for seed_batch in (None, n) if n > 1 else (None,):
                case = Case(workload, model, n, seed_batch, flops)
                print(f"compiled {case.name}: {case.compile_s:.1f} s, XLA temp {case.temp_bytes / 2**20:.0f} MiB",
                      flush=True)
                cases.append(case)
    load0 = common.loadavg()
    samples = common.interleave({c.name: c.sample for c in cases}, rounds, log=lambda s: print(s, flush=True))
    load1 = common.loadavg()
    profiles = {c.name: profile(c) for c in cases} if args.profile else {}
    peaks.append(common.matmul_peak())
    peak = max(p["gflops"] for p in peaks)
    info.update(load_end=common.loadavg(), steal=steal.read())

    report = {"machine": info, "peak_gflops": [p["gflops"] for p in peaks], "rows": []}
    rows = []
    first = {}
    for c in cases:
        s = common.summarize(samples[c.name])
        per_seed = s["wall_s"] / c.seeds
        first.setdefault(c.workload, per_seed)
        gflops = c.flops / s["wall_s"] / 1e9
        row = {"workload": c.workload, "seeds": c.seeds, "seed_batch": c.seed_batch or "auto", **s,
               "per_seed_s": per_seed, "per_seed_vs_1": per_seed / first[c.workload], "gflop": c.flops / 1e9,
               "gflops": gflops, "of_peak": gflops / peak, "compile_s": c.compile_s, "temp_mib": c.temp_bytes / 2**20}
        report["rows"].append(row)
        rows.append([c.workload, c.seeds, "all at once" if c.seed_batch else "auto", f"{s['wall_s']:.3f}",
                     f"{per_seed:.4f}", f"{per_seed / first[c.workload]:.2f}", f"{s['cpu_s'] / c.seeds:.4f}",
                     f"{c.flops / 1e9:.1f}", f"{gflops:.0f}", f"{gflops / peak:.0%}", f"{c.temp_bytes / 2**20:.0f}"])
    print(f"\nmatmul 2048² float32 peak: {' / '.join(f'{p:.1f}' for p in report['peak_gflops'])} GFLOP/s (start / "
          f"end); load average {load0} → {load1}; steal {info['steal']}")
    print(common.markdown_table(["workload", "seeds", "seed batch", "wall s/step", "per seed", "per seed ÷ 1 seed",
                                 "CPU s per seed", "GFLOP/step", "GFLOP/s", "of peak", "XLA temp MiB"], rows))
    if profiles:
        names = [c.name for c in cases]
        classes = sorted({k for p in profiles.values() for k in p["classes"]},
                         key=lambda k: -max(p["classes"].get(k, 0) for p in profiles.values()))
        heads = [f"{c.workload} {c.seeds}{' at once' if c.seed_batch else ''}" for c in cases]
        body = [[k[0], k[1], *(f"{profiles[n]['classes'].get(k, 0):.2f}" for n in names)]
                for k in classes if max(profiles[n]["classes"].get(k, 0) for n in names) >= 0.2]
        body.append(["sum of ops", "", *(f"{sum(profiles[n]['classes'].values()):.2f}" for n in names)])
        body.append(["wall (profiled)", "", *(f"{profiles[n]['wall_ms_per_seed']:.2f}" for n in names)])
        print("\nms per seed and step, by op class (XLA:CPU profile)")
        print(common.markdown_table(["place", "kind", *heads], body))
        report["profiles"] = {n: {"classes": {" / ".join(k): v for k, v in p["classes"].items()},
                                  "wall_ms_per_seed": p["wall_ms_per_seed"]} for n, p in profiles.items()}
    common.write_json(args.json, report)


if __name__ == "__main__":
    main()
