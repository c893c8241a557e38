"""The persistent compilation cache (attrvis_jax/apps/compile_cache.py): one `attrvis run` with an
empty cache (cold), the same run again (warm) and one with `--no-compile-cache` (off), in rounds.

    python benchmarks/compile_cache.py [--image coffee] [--steps 32] [--seeds 2] [--rounds 2] [--json out.json]

Each run is a fresh process with JAX_LOG_COMPILES=1; from its log come the seconds spent tracing,
lowering to MLIR and in XLA (compiling, or loading from the cache), per program. Each round's cold
run starts from a new empty folder. The last table pairs each program's cold XLA time with its warm
(load) time: what a write threshold (JAX's jax_persistent_cache_min_compile_time_secs, 1 s by
default) would keep and save.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import common

PHASES = {"tracing": r"Finished tracing \S+ for \S+ in ([0-9.e-]+) sec",
          "lowering": r"Finished jaxpr to MLIR module conversion \S+ in ([0-9.e-]+) sec",
          "xla": r"Finished XLA compilation of \S+ in ([0-9.e-]+) sec"}
PROGRAM = re.compile(r"Finished XLA compilation of (\S+) in ([0-9.e-]+) sec")
THRESHOLDS = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)


def attrvis_run(args, cache: Path, out: Path, off: bool) -> dict:
    env = dict(os.environ, ATTRVIS_COMPILE_CACHE=str(cache), JAX_LOG_COMPILES="1")
    flags = ["--no-compile-cache"] if off else []
    cmd = [sys.executable, "-m", "attrvis_jax", *flags, "run", args.image, "--steps", str(args.steps),
           "--seeds", str(args.seeds), "--out", str(out), "--quiet"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-3000:]}")
    timings = json.loads((out / "results.json").read_text())["timings"]
    row = {"wall_s": wall, **{k: timings[k] for k in ("render_compile_s", "attribution_s", "render_s", "total_s")}}
    for phase, pattern in PHASES.items():
        row[f"{phase}_s"] = sum(float(x) for x in re.findall(pattern, res.stderr))
    row["programs"] = [(name, float(s)) for name, s in PROGRAM.findall(res.stderr)]
    entries = list(cache.glob("*-cache")) if cache.is_dir() else []
    row["entries"], row["cache_mb"] = len(entries), sum(p.stat().st_size for p in entries) / 2**20
    row["load"] = common.loadavg()
    return row


def by_program(programs):
    """{(name, k): seconds}: the k-th compilation of a program of that name."""
    seen, out = Counter(), {}
    for name, s in programs:
        out[(name, seen[name])] = s
        seen[name] += 1
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image", default="coffee", help="bundled photo or image file")
    ap.add_argument("--steps", type=int, default=32)
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="one round, 8 steps")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.steps = 1, 8
    info = common.machine_info()
    print(common.header(info))
    print(f"# attrvis run {args.image} --steps {args.steps} --seeds {args.seeds}; {args.rounds} round(s) of cold, warm, off")
    rows = {"cold": [], "warm": [], "off": []}
    with tempfile.TemporaryDirectory(prefix="attrvis-cc-bench-") as tmp:
        tmp = Path(tmp)
        for r in range(args.rounds):
            cache = tmp / f"xla{r}"
            for case in ("cold", "warm", "off"):
                row = attrvis_run(args, cache, tmp / f"out-{case}{r}", off=case == "off")
                rows[case].append(row)
                print(f"round {r} {case}: wall {row['wall_s']:.1f} s, render compile {row['render_compile_s']:.2f} s, "
                      f"XLA {row['xla_s']:.2f} s, {row['entries']} entries (load {row['load']})", file=sys.stderr)

    med = lambda case, key: statistics.median(r[key] for r in rows[case])  # noqa: E731
    keys = ("wall_s", "total_s", "render_compile_s", "attribution_s", "tracing_s", "lowering_s", "xla_s")
    print(common.markdown_table(["run", *[k[:-2].replace("_", " ") + " s" for k in keys], "programs"],
                                [[case, *[f"{med(case, k):.2f}" for k in keys], len(rows[case][0]["programs"])]
                                 for case in rows]))
    cold = rows["cold"][0]
    print(f"\ncache after one run: {cold['entries']} entries, {cold['cache_mb']:.1f} MiB\n")
    c, w = by_program(cold["programs"]), by_program(rows["warm"][0]["programs"])
    pairs = [(c[k], w[k]) for k in c if k in w]
    table = []
    for t in THRESHOLDS:
        kept = [(a, b) for a, b in pairs if a >= t]
        table.append([f"{t:g}", len(kept), f"{sum(a for a, _ in kept):.2f}", f"{sum(b for _, b in kept):.2f}",
                      f"{sum(a for a, _ in pairs if a < t):.2f}"])
    print(common.markdown_table(["threshold s", "programs written", "their cold XLA s", "their warm load s",
                                 "still compiled warm s"], table))
    common.write_json(args.json, {"machine": info, "args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
