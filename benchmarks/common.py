"""Shared helpers for the benchmark scripts: thread pinning, machine header, timing, FLOPs, tables.

Import this module *before* jax (and torch): it fixes the thread counts first.

    import common  # noqa: F401  (sets XLA_FLAGS, affinity; BENCH_THREADS=n to change, default 2)

Threads: the process is pinned to the first BENCH_THREADS cores (os.sched_setaffinity) before jax
starts; XLA:CPU sizes its thread pools from that affinity (there is no XLA_FLAGS thread-count flag in
jax 0.10: `--intra_op_parallelism_threads` is rejected as unknown). torch, when a script uses it,
gets `torch.set_num_threads(BENCH_THREADS)` and one inter-op thread (`torch_threads()`), and
OMP_WAIT_POLICY=PASSIVE unless set (see `_configure_threads`). On the project's 2-core VM that is
the whole machine, so the pinning only makes the setting explicit.

The machines are shared: compare only numbers taken in one run, interleaved (`interleave`), and
quote medians. Every sample records wall seconds and the process's CPU seconds (user + system,
all threads), so a reader can tell a slow run from a starved one: on 2 free cores CPU/wall is
close to 2 for compute-bound work, under contention it drops.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Callable, Sequence

THREADS = int(os.environ.get("BENCH_THREADS", "2"))


def _configure_threads(n: int) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    # torch's OpenMP threads spin at barriers by default; on an oversubscribed machine that collapses
    # (lucent InceptionV1 fwd+bwd, batch 1, load average 7 on 2 cores: 11.0 s with the default policy,
    # 0.9 s passive, 0.8 s with 1 thread). Passive waiting keeps torch measurable on a shared box.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        available = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, set(available[:n]))
    except (AttributeError, OSError):  # not Linux: leave the affinity alone
        pass


if "jax" in sys.modules:
    print("benchmarks/common.py: imported after jax; its thread pools may ignore the pinning", file=sys.stderr)
_configure_threads(THREADS)


def torch_threads(n: int = THREADS):
    """Import torch with `n` intra-op threads (and 1 inter-op thread); returns the module."""
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set (torch allows it once, before any parallel work)
        pass
    return torch


# ---- machine -------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.CalledProcessError):
        pass
    return platform.processor() or platform.machine()


def loadavg() -> str:
    """The 1-, 5- and 15-minute load averages, as `uptime` prints them."""
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


class StealMeter:
    """The share of the machine's CPU time the hypervisor took (steal) and the share spent idle,
    from /proc/stat, between its creation and `read()`: a virtual machine whose host is busy runs
    everything slower, CPU seconds included, which no load average shows."""

    def __init__(self):
        self.start = self._counters()

    @staticmethod
    def _counters():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        return fields

    def read(self) -> str:
        end = self._counters()
        if not self.start or not end or len(end) < 8:
            return "n/a"
        delta = [b - a for a, b in zip(self.start, end)]
        total = sum(delta[:8]) or 1
        return f"{delta[7] / total:.0%} steal, {delta[3] / total:.0%} idle"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "-"


def machine_info() -> dict:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": THREADS,
        "date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"),
        "jax": _version("jax"),
        "jaxlib": _version("jaxlib"),
        "flax": _version("flax"),
        "torch": _version("torch"),
        "host": platform.node(),
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_start": loadavg(),
    }


def header(info: dict) -> str:
    return (f"# {info['date']}  {info['cpu']}, {info['cores']} cores ({info['threads']} threads used), "
            f"jax {info['jax']} / flax {info['flax']} / torch {info['torch']}; load average {info['load_start']}")


# ---- timing --------------------------------------------------------------------------------------
def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_mib() -> float:
    """This process's resident-memory high-water mark (ru_maxrss: KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Sample(dict):
    """{"wall": s, "cpu": s} for one timed block, divided by the work count it covered."""


def timed(fn: Callable[[], object], per: float = 1.0) -> Sample:
    """Run fn once (it must wait for its result) and return wall and CPU seconds divided by `per`."""
    c0, t0 = cpu_seconds(), time.perf_counter()
    fn()
    t1, c1 = time.perf_counter(), cpu_seconds()
    return Sample(wall=(t1 - t0) / per, cpu=(c1 - c0) / per)


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def interleave(cases: dict[str, Callable[[], list[Sample]]], rounds: int, log: Callable[[str], None] | None = None):
    """Call every case once per round, in turn (A B C A B C ...), so a burst of someone else's load
    lands on all of them. Each call returns a list of Samples. Returns {name: [Sample, ...]}."""
    out = {name: [] for name in cases}
    for r in range(rounds):
        for name, fn in cases.items():
            samples = fn()
            out[name] += samples
            if log:
                log(f"  round {r + 1}/{rounds} {name}: " + " ".join(f"{s['wall']:.3f}" for s in samples))
    return out


def summarize(samples: list[Sample]) -> dict:
    return {"wall_s": median([s["wall"] for s in samples]), "cpu_s": median([s["cpu"] for s in samples]),
            "n": len(samples), "walls": [round(s["wall"], 4) for s in samples]}


# ---- FLOPs ---------------------------------------------------------------------------------------
def cost_flops(compiled) -> float:
    """FLOPs of one call of a compiled executable, from XLA's cost analysis (nan if unavailable)."""
    cost = compiled.cost_analysis()
    if isinstance(cost, (list, tuple)):
        cost = cost[0] if cost else {}
    return float((cost or {}).get("flops", float("nan")))


def matmul_peak(n: int = 2048, repeats: int = 7) -> dict:
    """Best float32 GFLOP/s of an n×n jnp.dot (2n³ FLOPs) over `repeats` calls: the machine's
    practical dense limit for these threads; also the best GFLOP per CPU-second (a per-core rate
    that a shared machine disturbs much less than wall time)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    a = jnp.asarray(np.random.default_rng(0).random((n, n), np.float32))
    f = jax.jit(jnp.dot)
    f(a, a).block_until_ready()
    samples = [timed(lambda: f(a, a).block_until_ready()) for _ in range(repeats)]
    flop = 2 * n**3
    best = min(s["wall"] for s in samples)
    return {"n": n, "gflops": flop / best / 1e9, "median_gflops": flop / median([s["wall"] for s in samples]) / 1e9,
            # per CPU-second of the process (all threads): insensitive to how much of the machine we got
            "gflops_per_cpu_s": flop / min(max(s["cpu"], 1e-9) for s in samples) / 1e9}


# ---- rendering helpers ---------------------------------------------------------------------------
def synthetic_r_plus(shape, key: int = 0):
    """A sparse positive attribution map of the layer's shape, like a filtered, ReLU'd R."""
    import numpy as np

    rng = np.random.default_rng(key)
    r = rng.exponential(size=shape).astype(np.float32)
    r[..., rng.random(shape[-1]) < 0.5] = 0.0
    return r


def visualize_samples(model, layer: str, r_plus, config, options) -> tuple[float, list[Sample]]:
    """`visualize_timed`'s (compile seconds, samples)."""
    result, samples = visualize_timed(model, layer, r_plus, config, options)
    return result.timings["compile_s"], samples


def visualize_timed(model, layer: str, r_plus, config, options):
    """One `visualize` call (`RenderConfig`, `RunOptions`): (its RenderResult, a Sample per chunk
    after the first, divided by the chunk's step count). The progress callback waits for each
    chunk, so the stamps are exact; the first chunk (no stamp before it) is the warm-up. W = R+ as
    given (reference 1: there are no photo activations here)."""
    import jax

    from attrvis_jax.render import visualize

    stamps = []
    result = visualize(model, (r_plus, 0.15), config, key=jax.random.key(0), layer=layer, options=options,
                       reference=1.0,
                       progress=lambda done, total: stamps.append((done, time.perf_counter(), cpu_seconds())))
    samples = [Sample(wall=(t1 - t0) / (d1 - d0), cpu=(c1 - c0) / (d1 - d0))
               for (d0, t0, c0), (d1, t1, c1) in zip(stamps, stamps[1:])]
    return result, samples


# ---- output --------------------------------------------------------------------------------------
def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def run_child(argv: list[str], timeout: float) -> dict:
    """Run a child Python process that prints one JSON object on its last stdout line."""
    try:
        out = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if out.returncode != 0:
        tail = (out.stderr or out.stdout).strip().splitlines()[-3:]
        return {"error": f"exit {out.returncode}: {' | '.join(tail)}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_json(path: str | None, obj) -> None:
    if path:
        with open(path, "w") as f:
            json.dump(obj, f, indent=1, default=str)


def engine_state(model, layer: str, r_plus, config, options, key: int = 0):
    """The compiled-engine inputs `visualize` builds for this call (same arrays, same statics, the
    same seed batch): (engine, variables, carry, seed_data, data), from the library's own
    `render.optimize.prepare_rows`. Lets a benchmark compile `engine.chunk` itself (cost and memory
    analysis, profiling) without running `visualize`."""
    import jax

    import numpy as np

    from attrvis_jax.render.objectives import attribution_objective
    from attrvis_jax.render.optimize import prepare_rows, seed_keys

    # reference=1: W = R+ as given (no activations here), λ0 the config's area weight
    obj = attribution_objective((r_plus, 0.15), config, reference=1.0, lambda0=20.0 * float(np.sum(r_plus)))
    keys = seed_keys(jax.random.key(key), range(options.seeds))
    return tuple(prepare_rows(model, obj, config, keys, layer=layer, options=options))[:5]


def chunk_runner(model, seeds: int, chunk: int = 4, layer: str | None = None, config=None, seed_batch: int | None = None):
    """The render engine's compiled scan chunk for `model` (random R⁺ of `layer`'s shape, default:
    the model's default layer; `config`, default the default RenderConfig; `chunk` steps a call;
    `seed_batch` as RunOptions), built on a fresh engine (`optimize.clear_caches`), so its programs
    are traced now. Returns (once, compile_s, layer, executable): `once()` runs one chunk, feeds the
    donated carry back and waits."""
    import jax
    import jax.numpy as jnp

    from attrvis_jax.config import RenderConfig, RunOptions
    from attrvis_jax.render import optimize

    layer = model.resolve_layer(layer)
    config = config or RenderConfig(steps=2048)
    optimize.clear_caches()
    size = config.image_size or model.input_size
    eng, variables, carry, seed_data, data = engine_state(
        model, layer, synthetic_r_plus(model.layer_shapes(size)[layer]), config,
        RunOptions(seeds=seeds, chunk_size=chunk, snapshot_steps=(), seed_batch=seed_batch))
    args = [variables, carry, seed_data, data, jnp.int32(0), jnp.int32(chunk)]
    exe, compile_s = eng.compiled("chunk", *args)

    def once():
        out = exe(*args)
        args[1] = out[0]  # the carry is donated: feed it back
        jax.block_until_ready(out)

    once.program = program_fingerprint(exe)
    return once, compile_s, layer, exe


def program_fingerprint(compiled) -> str:
    """A digest of a compiled program's instructions, without what only names where they came from
    (metadata, source files and lines, numbered names): two revisions whose render chunk has the
    same fingerprint run the same XLA program, so a time difference between them is the machine's."""
    import hashlib
    import re

    lines = [line for line in compiled.as_text().splitlines() if re.match(r"\s*(ROOT )?%", line)]
    text = "\n".join(re.sub(r", metadata=\{[^}]*\}|\.\d+\b|_\d+\b", "", line) for line in lines)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def mem_available_mib() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")
