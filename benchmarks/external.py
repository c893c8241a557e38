"""What a wrapped model costs (`from_flax`) against the native one: compile time and step time.

    python benchmarks/external.py [--model efficientnet_lite0] [--rounds 5] [--steps 8] [--json out.json]

The package's own network (random weights: speed does not depend on the values) is wrapped through
the generic path (`from_flax(model.net, model.variables, ...)`), so both sides run the same
arithmetic; the difference is the interception: every submodule call passes through one Python
function at trace time, the layer's output is recorded (features) or substituted (head), and the
head traces the forward from a zero image that XLA removes as dead code. Measured:

- compile: `jax.jit(...).lower(...).compile()` wall seconds of features(x, layer), head(acts, layer)
  and one render step (visualize's engine), each in a fresh jit (first use), native then wrapped;
- run: the compiled features and head per call, and s/step of `visualize` (one seed, `--steps`
  updates per call, the first call excluded), native and wrapped interleaved over `--rounds`.
Medians; wall and CPU seconds as in common.py.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import common  # noqa: F401  (threads first)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

LAYERS = {"efficientnet_lite0": ("blocks.10", "blocks_10"), "resnet50": ("layer3.5", "layer3_5"),
          "inception_v1": ("mixed4d", "mixed4d")}


def compile_seconds(fn, *args) -> float:
    t = time.perf_counter()
    jax.jit(fn).lower(*args).compile()
    return time.perf_counter() - t


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="efficientnet_lite0", choices=list(LAYERS))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    from attrvis_jax import RenderConfig, RunOptions, from_flax, load_model, visualize

    info = common.machine_info()
    print(common.header(info))
    native = load_model(args.model, weights="random")
    t = time.perf_counter()
    wrapped = from_flax(native.net, native.variables, input_size=native.input_size,
                        preprocess=native.spec.preprocess, labels=native.labels)
    wrap_s = time.perf_counter() - t
    layer_native, layer_wrapped = LAYERS[args.model]
    models = {"native": (native, layer_native), "wrapped": (wrapped, layer_wrapped)}
    size = native.input_size
    x = jnp.asarray(np.random.default_rng(0).random((1, size, size, 3), dtype=np.float32))
    acts = native.features(x, layer_native)
    r_plus = np.asarray(common.synthetic_r_plus(acts.shape[1:]))
    inputs = dict(positive=r_plus, beta=0.1, activations=np.asarray(acts[0]))

    rows = {"wrap_s": wrap_s}
    for name, (model, layer) in models.items():
        rows[f"{name}_compile_features_s"] = compile_seconds(lambda v, x: model.apply_features(v, x, layer),
                                                             model.variables, x)
        rows[f"{name}_compile_head_s"] = compile_seconds(lambda v, a: model.apply_head(v, a, layer),
                                                         model.variables, acts)
    config = RenderConfig(steps=args.steps)
    options = RunOptions(seeds=1, chunk_size=args.steps, snapshot_steps=())

    def render(model, layer):
        return visualize(model, None, layer=layer, config=config, options=options, **inputs)

    first = {name: render(model, layer).timings for name, (model, layer) in models.items()}
    for name in models:
        rows[f"{name}_compile_render_s"] = first[name]["compile_s"]
    jitted = {name: (jax.jit(lambda v, x, m=m, l=l: m.apply_features(v, x, l)),
                     jax.jit(lambda v, a, m=m, l=l: m.apply_head(v, a, l))) for name, (m, l) in models.items()}
    for name, (f, h) in jitted.items():
        jax.block_until_ready(f(models[name][0].variables, x))
        jax.block_until_ready(h(models[name][0].variables, acts))

    def case(name):
        model, layer = models[name]
        f, h = jitted[name]

        def run():
            out = []
            out.append(("features", common.timed(lambda: jax.block_until_ready(f(model.variables, x)))))
            out.append(("head", common.timed(lambda: jax.block_until_ready(h(model.variables, acts)))))
            res = render(model, layer)
            out.append(("render_step", common.Sample(wall=res.timings["run_s"] / args.steps, cpu=float("nan"))))
            return out

        return run

    samples = {name: {} for name in models}
    for _ in range(args.rounds):
        for name in models:  # interleaved
            for what, s in case(name)():
                samples[name].setdefault(what, []).append(s["wall"])
    for name in models:
        for what, values in samples[name].items():
            rows[f"{name}_{what}_s"] = common.median(values)
    table = ["| | native | wrapped | wrapped / native |", "|---|---|---|---|"]
    for what in ("compile_features", "compile_head", "compile_render", "features", "head", "render_step"):
        a, b = rows[f"native_{what}_s"], rows[f"wrapped_{what}_s"]
        table.append(f"| {what.replace('_', ' ')} (s) | {a:.4f} | {b:.4f} | {b / a:.2f} |")
    print(f"{args.model}, layer {layer_native} / {layer_wrapped}; wrapping (one abstract forward) {wrap_s:.2f} s")
    print("\n".join(table))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "model": args.model, "rows": rows, "rounds": args.rounds}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
