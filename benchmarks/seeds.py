"""How the render step scales with the seeds run together: the cost per seed by seed batch (how many
seeds the network sees at once, `RunOptions.seed_batch`), the measurement behind
`render.optimize.auto_seed_batch`'s rule for CPUs.

    python benchmarks/seeds.py [--seeds 24] [--batches 1 2 4 8 24] [--cases inception:224 ...]
                               [--rounds 3] [--quick] [--json out.json]

Each case is a network, an image size and a render config (random weights, synthetic R⁺):
  inception:224  InceptionV1 to mixed4d, no mask (issue 30's workload)
  inception:112  the same at 112² (a quarter of the activations per seed)
  lite0:224      EfficientNet-Lite0 at its default layer, the default render (pyramid, mask)
`--seeds` seeds run as one step in groups of each `--batches` size (a `lax.map` over groups of
vmapped seeds; the batch equal to the seeds is one batch, as before issue 30). Every (case, batch)
is one compiled 2-update chunk; all are timed interleaved in one process (each sample one call),
medians over `--rounds`: wall and CPU seconds per seed and update, and XLA's temporary memory of the
chunk. The rule's choice for the case is marked: on a CPU, the largest divisor of the seeds whose
activations (`memory.activation_bytes`, per seed) fit `optimize.CPU_GROUP_BYTES`.
"""

from __future__ import annotations

import argparse

import common  # noqa: F401  (threads first)

from attrvis_jax import load_model  # noqa: E402
from attrvis_jax.config import RenderConfig  # noqa: E402
from attrvis_jax.memory import activation_bytes  # noqa: E402
from attrvis_jax.render import optimize  # noqa: E402

CHUNK = 2
CASES = {
    "inception": ("inception_v1", "mixed4d", "none"),
    "lite0": ("efficientnet_lite0", None, "pyramid"),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", nargs="*", default=["inception:224", "inception:112", "lite0:224"])
    ap.add_argument("--seeds", type=int, default=24)
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 2, 4, 8, 24])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="inception at 64², 4 seeds in batches 1, 2, 4, one round")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.quick:
        args.cases, args.seeds, args.batches, args.rounds = ["inception:64"], 4, [1, 2, 4], 1
    info = common.machine_info()
    print(common.header(info), flush=True)
    steal = common.StealMeter()

    runs, meta = {}, {}
    for spec in args.cases:
        name, size = spec.split(":")
        model_name, layer, perturbation = CASES[name]
        model = load_model(model_name, weights="random")
        layer, size = model.resolve_layer(layer), int(size)
        config = RenderConfig(steps=2048, perturbation=perturbation, image_size=size)
        auto = optimize.auto_seed_batch(model, layer, size, args.seeds) or args.seeds
        per_seed_mib = activation_bytes(model, layer, size) / 2**20
        for batch in args.batches:
            once, compile_s, _, exe = common.chunk_runner(model, args.seeds, CHUNK, layer, config, batch)
            once()
            key = f"{spec}, batch {batch}"
            runs[key] = lambda once=once: [common.timed(once, per=CHUNK * args.seeds)]
            meta[key] = {"case": spec, "batch": batch, "auto": batch == auto, "activation_mib_per_seed": per_seed_mib,
                         "temp_mib": exe.memory_analysis().temp_size_in_bytes / 2**20, "compile_s": compile_s}
            print(f"compiled {key}: {compile_s:.1f} s", flush=True)
    load0 = common.loadavg()
    samples = common.interleave(runs, args.rounds, log=lambda s: print(s, flush=True))
    info.update(load_end=common.loadavg(), steal=steal.read())

    rows, report = [], {"machine": info, "seeds": args.seeds, "rows": []}
    best = {}
    for key, m in meta.items():
        s = common.summarize(samples[key])
        best[m["case"]] = min(best.get(m["case"], float("inf")), s["wall_s"])
        report["rows"].append({**m, **s})
    for row in report["rows"]:
        rows.append([row["case"], f"{row['activation_mib_per_seed']:.1f}", row["batch"],
                     "← rule" if row["auto"] else "", f"{row['wall_s']:.4f}", f"{row['wall_s'] / best[row['case']]:.2f}",
                     f"{row['cpu_s']:.4f}", f"{row['temp_mib']:.0f}"])
    print(f"\n{args.seeds} seeds; load average {load0} → {info['load_end']}; {info['steal']}")
    print(common.markdown_table(["case", "activations MiB per seed", "seed batch", "", "wall s per seed-step",
                                 "÷ best", "CPU s per seed-step", "XLA temp MiB"], rows))
    common.write_json(args.json, report)


if __name__ == "__main__":
    main()
