"""Two revisions of the library, one render step each, interleaved: is a change faster?

    python benchmarks/archive/revisions.py [--base HEAD] [--models inception_v1 efficientnet_lite0]
                                   [--seeds 1 8] [--rounds 4] [--chunks 4] [--json out.json]

"base" is a git revision checked out into a temporary worktree; "work" is this working tree,
uncommitted changes included. Each round runs one fresh child process per (revision, model, seeds),
alternating base / work, so both see the same load; the child imports attrvis_jax from its tree
(PYTHONPATH), compiles the render engine's scan chunk (the default engine, `--chunk-size` steps per
call, the `common.engine_state` inputs: random weights, synthetic R⁺, the default RenderConfig),
runs it once to warm up, then `--chunks` times; s/step is the median per call ÷ chunk size. Numbers
are medians over rounds; "work ÷ base" < 1 means the working tree is faster. "same program": both
revisions compiled the chunk to the same XLA instructions (`common.program_fingerprint`), so any
difference in time between them is the machine's noise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/common.py
import common

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]  # the repository


def child(model_name: str, seeds: int, chunks: int, chunk_size: int) -> dict:
    from attrvis_jax import load_model

    once, compile_s, layer, _ = common.chunk_runner(load_model(model_name, weights="random"), seeds, chunk_size)
    once()
    samples = [common.timed(once, per=chunk_size) for _ in range(chunks)]
    return {"model": model_name, "layer": layer, "seeds": seeds, "compile_s": compile_s, "program": once.program,
            "wall": common.median([s["wall"] for s in samples]), "cpu": common.median([s["cpu"] for s in samples]),
            "attrvis_jax": str(Path(sys.modules["attrvis_jax"].__file__).parent.parent)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="HEAD")
    ap.add_argument("--models", nargs="*", default=["inception_v1", "efficientnet_lite0"])
    ap.add_argument("--seeds", nargs="*", type=int, default=[1, 8])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--chunks", type=int, default=4)
    ap.add_argument("--chunk-size", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--json", default=None)
    ap.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]), args.chunks, args.chunk_size)))
        return

    info = common.machine_info()
    print(common.header(info))
    base_sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.base], check=True,
                              capture_output=True, text=True).stdout.strip()
    work_state = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], check=True,
                                capture_output=True, text=True).stdout.strip()
    tmp = Path(tempfile.mkdtemp(prefix="attrvis_base_"))
    tree = tmp / "tree"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(tree), args.base], check=True)
    trees = {"base": tree, "work": ROOT}
    results: dict = {}
    try:
        for r in range(args.rounds):
            for model in args.models:
                for seeds in args.seeds:
                    for arm, root in trees.items():
                        env = dict(os.environ, PYTHONPATH=str(root))
                        argv = [str(HERE / "revisions.py"), "--child", model, str(seeds), "--chunks", str(args.chunks),
                                "--chunk-size", str(args.chunk_size)]
                        try:
                            out = subprocess.run([sys.executable, *argv], capture_output=True, text=True,
                                                 timeout=args.timeout, env=env, cwd=str(root / "benchmarks"))
                            got = json.loads(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else \
                                {"error": " | ".join((out.stderr or out.stdout).strip().splitlines()[-3:])}
                        except subprocess.TimeoutExpired:
                            got = {"error": f"timed out after {args.timeout:.0f} s"}
                        if "attrvis_jax" in got and Path(got["attrvis_jax"]).resolve() != root.resolve():
                            got = {"error": f"imported attrvis_jax from {got['attrvis_jax']}, not {root}"}
                        results.setdefault(f"{model}/{seeds}", {}).setdefault(arm, []).append(got)
                        print(f"round {r + 1} {model} seeds {seeds} {arm}: "
                              + (f"{got['wall']:.4f} s/step" if "wall" in got else got["error"]), flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    info["load_end"] = common.loadavg()
    rows = []
    for key, arms in results.items():
        ok = {arm: [g for g in runs if "wall" in g] for arm, runs in arms.items()}
        if not all(ok.get(a) for a in trees):
            rows.append([*key.split("/"), "error", "", "", "", ""])
            continue
        med = {a: (common.median([g["wall"] for g in ok[a]]), common.median([g["cpu"] for g in ok[a]])) for a in trees}
        programs = {a: {g.get("program") for g in ok[a]} for a in trees}
        rows.append([*key.split("/"), f"{med['base'][0]:.4f} ({med['base'][1]:.4f})",
                     f"{med['work'][0]:.4f} ({med['work'][1]:.4f})", f"{med['work'][0] / med['base'][0]:.3f}",
                     "yes" if programs["base"] == programs["work"] and len(programs["base"]) == 1 else "no",
                     " ".join(f"{g['wall']:.3f}/{h['wall']:.3f}" for g, h in zip(ok["base"], ok["work"]))])
    print(f"\nbase {args.base} ({base_sha}), work {work_state}; load average start {info['load_start']}, "
          f"end {info['load_end']}\n")
    print(common.markdown_table(["model", "seeds", "base s/step (CPU s)", "work s/step (CPU s)", "work ÷ base",
                                 "same program", "per round base/work"], rows))
    common.write_json(args.json, {"machine": info, "base": args.base, "base_sha": base_sha, "work": work_state,
                                  "results": results})


if __name__ == "__main__":
    main()
