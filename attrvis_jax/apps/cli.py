"""The `attrvis` command.

Exit codes: 0 ok, 1 runtime failure (bad image, bad weights, ...), 2 usage error (unknown model,
layer or class, bad flags). Errors print one line; `--debug` shows the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from attrvis_jax import configs
from attrvis_jax.apps.extras import GROUP_VIEWS
from attrvis_jax.config import (COMPUTE_DTYPES, PARAMETERIZATIONS, PERTURBATIONS, RENDER_FIDELITIES,
                                attribution_fidelity)

EXAMPLES = {
    "demo": """examples:
  attrvis demo --out demo/                      # EfficientNet-Lite0, a bundled cat photo, offline
  attrvis demo --out demo/ --sample coffee --seeds 8""",
    "run": """examples:
  attrvis run cat.jpg --out out/                # default model and layer, the image's top class
  attrvis run cat.jpg --target tabby --layer blocks.12 --steps 1024 --seeds 25 --out out/
  attrvis run cat.jpg --judge efficientnet_lite2 --groups 3 --out out/   # a second network's verdict; 3 channel groups
  attrvis run cat.jpg --groups 3 --group-images cats/ --out out/        # groups from a folder of the class
  attrvis run cat.jpg --model inception_v1 --weights inception5h.pth --labels labels.txt \\
      --layer mixed4d --target vase --perturbation pyramid --fidelity paper --out out/""",
    "classify": """examples:
  attrvis classify chelsea                       # a bundled photo (scikit-image), default model
  attrvis classify cat.jpg --model resnet50 --weights resnet50.pth --top 10
  attrvis classify cat.jpg --json""",
    "layers": """examples:
  attrvis layers                                  # efficientnet_lite0
  attrvis layers --model inception_v1 --weights random""",
    "classes": """examples:
  attrvis classes --search cat
  attrvis classes --model inception_v1 --labels imagenet_comp_graph_label_strings.txt""",
    "sweep": """examples:
  attrvis sweep sweep.toml --out runs/s1       # resumes if runs/s1 holds a partial run
  # sweep.toml:
  #   model = "efficientnet_lite0"
  #   images = ["photos/", "sample:chelsea", "tfds:imagenet2012:validation@0:100"]
  #   targets = ["top1"]            # or class names / indices, or "label" (folder or dataset label)
  #   layers = ["stage4", "stage5"]
  #   perturbations = ["pyramid", "constant"]
  #   seeds = 25
  #   batch = 16                    # visualizations per compiled batch, sharded over all devices
  #   [render]
  #   steps = 2048
  #   [attribution]
  #   steps = 200""",
    "ablation": """examples:
  attrvis ablation --out runs/ablation          # chelsea, the default layer, 6 perturbations x 8 seeds
  attrvis ablation --images chelsea coffee rocket --targets label --layers stage4 stage5 \
      --seeds 8 --steps 128 --out runs/ablation""",
    "figures": """examples:
  attrvis figures all --out figs/               # every figure, reduced schedule, efficientnet_lite0
  attrvis figures comparison perturbations --out figs/ --image coffee --seeds 4
  attrvis figures all --out figs/ --model inception_v1 --weights inception5h.pth --labels labels.txt \
      --layer mixed4d --target vase --schedule paper""",
    "catalog": """examples:
  attrvis catalog --layer blocks.14 --out cat/                 # every channel of Lite0's blocks.14
  attrvis catalog --model inception_v1 --weights random --layer mixed4d --channels 0-31 --steps 128 --out cat/
  # rerunning the same command resumes; open cat/index.html""",
    "weights": """examples:
  attrvis weights list
  attrvis weights verify efficientnet_lite0
  attrvis weights convert googlenet googlenet-1378be20.pth --out googlenet.npz""",
}


class UsageError(Exception):
    """A mistake in how the command was called (exit code 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, like every other error of the command."""

    def error(self, message):
        self.exit(2, f"attrvis: error: {message} (see `{self.prog} --help`)\n")


def whole_number(minimum: int):
    """An argparse type: an integer >= `minimum` (below it never means "the default")."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


positive_int = whole_number(1)


def seed_int(text: str) -> int:
    """An argparse type: a PRNG seed (config.SEED_RANGE; JAX keys take 32 bits)."""
    from attrvis_jax.config import check_seed
    from attrvis_jax.errors import AttrvisError

    try:
        return check_seed(int(text), "the seed")
    except ValueError as e:  # AttrvisError is one too
        raise argparse.ArgumentTypeError(str(e) if isinstance(e, AttrvisError) else
                                         f"expected a whole number, got {text!r}") from None


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def path_arg(text: str) -> str:
    """An argparse type for every path argument: an empty or blank one (an unset variable in a
    script) is refused, never taken for the current folder or a default."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path (an unset variable?)")
    return text


def _add_model_args(p: argparse.ArgumentParser) -> None:
    from attrvis_jax.models import DEFAULT_MODEL

    p.add_argument("--model", default=DEFAULT_MODEL, help=f"model name (default: {DEFAULT_MODEL}), or a factory of your own network: 'package.module:function' or 'file.py:function' returning from_flax(...)")
    p.add_argument(
        "--weights", default="default", type=path_arg,
        help="'default' (the manifest's checkpoint), a .pth/.npz path, or 'random'",
    )
    p.add_argument("--labels", default=None, type=path_arg, help="class-name file, one per line (overrides the model's)")


def _load(args):
    from attrvis_jax.models import load_model

    return load_model(args.model, weights=args.weights, labels=args.labels)  # an unknown name: exit 2 (main)


def _read_image(source):
    """The image at its own resolution, read before any model is loaded: a bad file fails fast."""
    from attrvis_jax.data import read_source

    return read_source(source)


def cmd_classify(args) -> int:
    pixels = _read_image(args.image)
    model = _load(args)
    t0 = time.perf_counter()
    image = model.load_image(pixels)
    top = model.predict(image, top=args.top)
    seconds = time.perf_counter() - t0
    if args.json:
        print(json.dumps({
            "model": model.name, "image": str(args.image), "weights": model.weights_source,
            "top": [{"index": i, "name": n, "probability": p} for i, n, p in top],
        }, indent=2))
        return 0
    print(f"{args.image} — {model.name} ({model.weights_source}), {seconds:.1f} s")
    for rank, (i, name, p) in enumerate(top, 1):
        print(f"{rank:>3}. {p:7.2%}  [{i:>4}] {name}")
    return 0


def cmd_layers(args) -> int:
    if args.size is not None and args.size < 32:
        raise UsageError(f"--size {args.size} is too small (at least 32)")
    model = _load(args)
    shapes = model.layer_shapes(args.size)
    aliases = {}
    for alias, layer in model.spec.aliases:
        aliases.setdefault(layer, []).append(alias)
    for name in model.layers:
        shape = "x".join(str(d) for d in shapes[name])
        extra = f"  (alias: {', '.join(aliases[name])})" if name in aliases else ""
        print(f"{name}\t{shape}{extra}")
    return 0


def cmd_classes(args) -> int:
    model = _load(args)
    term = (args.search or "").lower()
    hits = [(i, n) for i, n in enumerate(model.labels) if term in n.lower()]
    for i, name in hits:
        print(f"{i}\t{name}")
    if term and not hits:
        print(f"attrvis: error: no class name contains {args.search!r}", file=sys.stderr)
        return 1
    return 0


def cmd_weights(args) -> int:
    from attrvis_jax.models import architecture, available_models
    from attrvis_jax.models.registry import variables_template
    from attrvis_jax.weights import store

    if args.action == "list":
        entries = store.manifest()
        for name in available_models():
            e = entries.get(name, {})
            where = e.get("package") if e.get("source") == "package" else e.get("url", "-")
            print(f"{name}\t{e.get('source', '-')}\t{where}\t{e.get('license', '-')}")
        return 0
    if not args.name:
        raise UsageError(f"weights {args.action} needs a model name")
    arch = architecture(args.name)
    if args.action == "verify":
        path = Path(args.path) if args.path else store.default_weights_path(args.name)
        report = store.verify(variables_template(arch), arch.torch_rename, args.name, path, sha256=args.sha256)
        print(f"ok\t{path.name}\tsha256 {report['sha256']}\t{report['checksum']}; "
              f"{report['tensors']} tensors fit {args.name}")
        return 0
    if args.action == "convert":
        from attrvis_jax.fileio import check_output_file

        out = check_output_file(args.out or f"{args.name}.npz")  # a folder, or no place to write: refused now
        src = Path(args.path) if args.path else store.default_weights_path(args.name)
        variables = store.convert_pth(variables_template(arch), arch.torch_rename, src)
        digest = store.save_variables(variables, out)
        print(f"wrote {out} (sha256 {digest}); load it with --weights {out}")
        return 0
    raise UsageError(f"unknown weights action {args.action!r}")


def _render_settings(args, preset: configs.Preset):
    """The preset's RenderConfig and RunOptions with the run's flags."""
    fields = dict(steps=_given(args.steps, preset.render.steps), fidelity=args.fidelity,
                  compute_dtype=_given(args.compute_dtype, preset.render.compute_dtype))
    if args.perturbation:
        fields["perturbation"] = args.perturbation
    return preset.render.replace(**fields), preset.run.replace(seeds=_given(args.seeds, preset.run.seeds),
                                                               seed_batch=_given(args.seed_batch, preset.run.seed_batch))


def _attribution_config(args, preset: configs.Preset):
    """The preset's AttributionConfig with the run's flags."""
    fields = {"fidelity": attribution_fidelity(args.fidelity)}
    if args.path_steps is not None:
        fields["steps"] = args.path_steps
    if args.baseline_steps is not None:
        fields.update(configs.baseline_steps(args.baseline_steps))
    return preset.attribution.replace(**fields)


def _run_folder(args):
    """--out, checked where it enters (before the image is read or the model loads), once."""
    from attrvis_jax.apps.pipeline import run_folder

    return run_folder(args.out, args.overwrite)


def _run(args, folder, model, image, image_label, render_cfg, run_options, attr_cfg, judge=None) -> int:
    from attrvis_jax.apps.pipeline import run

    # --layer and --target go on as given: pipeline.run resolves them, once (an unknown or
    # out-of-range name is an UnknownNameError: exit 2)
    results = run(model, image, folder, layer=args.layer, target=args.target, method=args.method,
                  attribution_config=attr_cfg, render_config=render_cfg, run_options=run_options, seed=args.seed,
                  quiet=args.quiet, image_label=image_label, judge=judge,
                  groups=getattr(args, "groups", None), group_images=getattr(args, "group_images", None))
    if not args.quiet:
        s = results["summary"]
        print(f"{results['target']} [{results['target_index']}] at {results['model']}:{results['layer']}: "
              f"PCC {s['pcc_directed_mean']:.3f} (with R+: {s['pcc_mean']:.3f}), top-5 {s['top5_rate']:.0%}, "
              f"mask area {np.mean(results['mask_area']):.3f} (β {results['beta']:.3f}), "
              f"{results['timings']['total_s']:.0f} s")
        if "judge" in results:
            same = " (the network itself)" if results["judge_same_model"] else ""
            print(f"judge {results['judge']}{same}: top-5 {s['judge_top5_rate']:.0%}, ranks {results['judge_rank']} "
                  f"(the photo: {results['judge_photo_rank']}, a gray canvas: {results['judge_gray_rank']})")
        if "groups" in results:
            g = results["groups"]
            print(f"{len(g['groups'])} channel groups ({g['r_plus_coverage']:.0%} of R+): "
                  + ", ".join(f"{len(e['channels'])} ch, PCC {np.mean(e['pcc_directed']):.3f}" for e in g["groups"]))
        print(f"report: {folder.path / 'report.html'}")
    return 0


def _given(value, default):
    return default if value is None else value


def cmd_run(args) -> int:
    if args.group_images is not None and args.groups is None:
        raise UsageError("--group-images is for --groups: name the number of groups too")
    folder = _run_folder(args)
    pixels = _read_image(args.image)
    model = _load(args)
    judge = _judge(args.judge, model)
    preset = configs.get("paper")
    (render_cfg, run_options), attr_cfg = _render_settings(args, preset), _attribution_config(args, preset)
    return _run(args, folder, model, pixels, str(args.image), render_cfg, run_options, attr_cfg, judge)


def _judge(name, model):
    """The judge network, loaded and checked against the model before any work (None: no judge)."""
    if name is None:
        return None
    from attrvis_jax.apps.extras import judge_model

    return judge_model(model, name)  # an unknown name: exit 2 (main); other classes: one line, exit 1


def cmd_demo(args) -> int:
    from attrvis_jax import load_model

    folder = _run_folder(args)
    pixels = _read_image(args.sample)
    preset, paper = configs.get("demo"), configs.get("paper")
    model = load_model(preset.model)
    judge = _judge(_demo_judge(args.judge, preset), model)
    (render_cfg, run_options), attr_cfg = _render_settings(args, preset), _attribution_config(args, preset)
    if not args.quiet:
        print(f"attrvis demo: {preset.model} on the bundled photo {args.sample!r}, "
              f"{run_options.seeds} seeds x {render_cfg.steps} steps (the paper: {paper.run.seeds} x "
              f"{paper.render.steps}; "
              "see `attrvis run`)" + (f", judged by {judge.name}" if judge is not None else ""), flush=True)
    return _run(args, folder, model, pixels, f"{args.sample} (bundled)", render_cfg, run_options, attr_cfg, judge)


def _demo_judge(name, preset):
    """The demo's judge: --judge (none: no judge), else the preset's where its weights are installed."""
    from attrvis_jax.weights.store import installed

    if name is not None:
        return None if name == "none" else name
    return preset.judge if preset.judge and installed(preset.judge) else None


def _sweep_progress(args):
    from attrvis_jax.apps import progress as progress_mod

    return dict(progress=progress_mod.bar("sweep", unit="item", quiet=args.quiet),
                attribution_progress=progress_mod.bar("attributions", unit="unit", quiet=args.quiet),
                log=None if args.quiet else (lambda message: print(message, flush=True)))


def _print_table(rows, out: Path) -> None:
    judged = any(r.get("judged") for r in rows)
    print(f"{'layer':<14}{'perturbation':<14}{'n':>5}{'PCC':>8}{'± sd':>7}{'top-5':>8}{'area':>7}"
          + (f"{'judge top-5':>13}{'rank':>7}" if judged else ""))
    for r in rows:
        print(f"{r['layer']:<14}{r['perturbation']:<14}{r['n']:>5}{r['pcc_mean']:>8.3f}{r['pcc_std']:>7.3f}"
              f"{r['top5_rate']:>8.0%}{r['mask_area_mean']:>7.3f}"
              + (f"{r['judge_top5_rate']:>13.0%}{r['judge_rank_median']:>7g}" if judged else ""))
    print(f"results: {out}")


def cmd_sweep(args) -> int:
    from attrvis_jax.apps.sweep import load_spec, run_sweep
    from attrvis_jax.devices import init_distributed
    from attrvis_jax.errors import AttrvisError

    if args.distributed:
        try:
            init_distributed()
        except AttrvisError as e:  # the flag, where no cluster is: how the command was called
            raise UsageError(str(e)) from None
    config = load_spec(args.spec)
    result = run_sweep(config, Path(args.out), **_sweep_progress(args))
    if not args.quiet:
        _print_table(result.summary, Path(args.out) / "summary.csv")
    return 0


def cmd_ablation(args) -> int:
    from attrvis_jax.apps.ablation import ablation_config, run_ablation

    config = ablation_config(
        images=args.images, layers=args.layers, model=args.model, targets=args.targets, seeds=args.seeds,
        steps=args.steps, lr=args.lr, baseline_steps=args.baseline_steps, path_steps=args.path_steps,
        batch=args.batch, key=args.seed, fidelity=args.fidelity, weights=args.weights,
        area_weight=args.area_weight, judge=args.judge)
    result = run_ablation(config, Path(args.out), **_sweep_progress(args))
    if not args.quiet:
        _print_table(result.table, Path(args.out) / "ablation.csv")
        for layer, ranks in result.ranking.items():
            print(f"{layer}: best PCC {ranks['pcc_mean'][0]}, best top-5 {ranks['top5_rate'][0]}"
                  + (f", best by the judge {ranks['judge_top5_rate'][0]}" if "judge_top5_rate" in ranks else ""))
    return 0


def cmd_catalog(args) -> int:
    from attrvis_jax.apps import progress as progress_mod
    from attrvis_jax.apps.catalog import parse_channels, run_catalog
    from attrvis_jax.config import CatalogConfig, RenderConfig, scaled_lr
    from attrvis_jax.errors import AttrvisError

    try:
        channels = None if args.channels is None else parse_channels(args.channels)
    except AttrvisError as e:
        raise UsageError(f"argument --channels: {e}") from None  # the list's own message, one prefix
    render = RenderConfig(perturbation="none", steps=args.steps, lr=args.lr or scaled_lr(args.steps),
                          parameterization=args.parameterization, relu_redirect_steps=args.redirect_steps)
    config = CatalogConfig(layer=args.layer or "default", channels=channels, seeds=args.seeds, key=args.seed,
                           batch=args.batch, render=render)
    model = _load(args)
    result = run_catalog(model, config, Path(args.out),
                         progress=progress_mod.bar("catalog", unit="tile", quiet=args.quiet),
                         log=None if args.quiet else (lambda message: print(message, flush=True)))
    if not args.quiet:
        print(f"{len(result.tiles)} channels of {model.name}:{result.layer} ({result.ran} rendered now, "
              f"{result.seconds:.0f} s): {Path(args.out) / 'index.html'}")
    return 0


def cmd_figures(args) -> int:
    from attrvis_jax.apps import progress as progress_mod
    from attrvis_jax.apps.figures import FIGURES, run_all

    names = list(FIGURES) if args.names == ["all"] else args.names
    bad = [n for n in names if n not in FIGURES]
    if bad:
        raise UsageError(f"unknown figure(s) {bad}; valid: all, {', '.join(FIGURES)}")
    from attrvis_jax.fileio import check_output_folder

    check_output_folder(args.out)  # a file, or unwritable
    model = _load(args)
    # --layer and --target go on as given: the figures' context resolves them, once
    summary = run_all(args.model, Path(args.out), model=model, schedule=args.schedule, image=args.image,
                      layer=args.layer, target=args.target, seeds=args.seeds, steps=args.steps, figures=names,
                      fidelity=args.fidelity, key=args.seed, quiet=args.quiet,
                      progress=progress_mod.bar("figures", unit="figure", quiet=args.quiet))
    if not args.quiet:
        for name in names:
            print(f"{name}: {Path(args.out) / (name + '.png')}")
        print(f"total {summary.get('timings', {}).get('total_s', float('nan')):.0f} s")
    return 0


def _add_run_args(p: argparse.ArgumentParser, demo: bool = False) -> None:
    preset = configs.get("demo" if demo else "paper")
    p.add_argument("--out", required=not demo, default="attrvis-demo" if demo else None, type=path_arg,
                   help="output folder; the run is written into a hidden folder and moved there when complete "
                        "(a failed run leaves nothing behind); a folder holding an earlier run (its results.json) "
                        "is refused unless --overwrite; other files in it stay, and are never replaced")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the earlier run in --out: once the new run is complete, its files take the "
                        "earlier run's place and the earlier run's other files are removed, so the folder never "
                        "mixes two runs")
    p.add_argument("--layer", default=None, help="layer name (default: the model's default layer)")
    p.add_argument("--target", default=None, help="class name or index, or top1 (the default: the image's top class)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help=f"optimization steps (default: {preset.render.steps})")
    p.add_argument("--seeds", type=positive_int, default=None,
                   help=f"random initializations (default: {preset.run.seeds})")
    p.add_argument("--perturbation", default=None,
                   choices=PERTURBATIONS,
                   help="background perturbation (default: pyramid, the fractal noise pyramid)")
    p.add_argument("--method", default="aumann_shapley",
                   help="attribution method (default: aumann_shapley; also integrated_gradients, saliency, "
                        "grad_x_activation, smoothgrad, grad_cam)")
    p.add_argument("--path-steps", type=positive_int, default=None,
                   help=f"steps of the attribution path integral (default {preset.attribution.steps})")
    p.add_argument("--baseline-steps", type=positive_int, default=None,
                   help="updates of the baseline's spatial mask (the channel mask gets twice as many; "
                        f"default {preset.attribution.spatial_steps})")
    p.add_argument("--fidelity", choices=RENDER_FIDELITIES, default="default",
                   help="default: the authors' code with a scale-free balance, an unbiased area term and "
                        "signed layers handled; code: the released code exactly; paper: the text")
    p.add_argument("--compute-dtype", choices=COMPUTE_DTYPES, default=None,
                   help=f"the network's dtype while rendering (default {preset.render.compute_dtype}; bfloat16 for accelerators "
                        "with bfloat16 units: parameters, Adam state and loss stay float32)")
    p.add_argument("--seed-batch", type=positive_int, default=None, metavar="N",
                   help="seeds the network sees at once inside a step, the rest in groups of N one after another "
                        "(default: chosen per backend: on a CPU groups whose activations stay small, elsewhere all "
                        "seeds at once; benchmarks/README.md, 'Seeds'); a speed setting: a seed's picture is the "
                        "same in any group of one size, within rounding across sizes")
    p.add_argument("--seed", type=seed_int, default=0, help="PRNG seed of the whole run (default 0)")
    if demo:
        p.add_argument("--judge", default=None, metavar="MODEL",
                       help=f"a second network that classifies every picture (default: {preset.judge} where its "
                            "weights are installed; 'none': no judge)")
    else:
        p.add_argument("--judge", default=None, metavar="MODEL",
                       help="a second network (any --model name or factory, the same one too) that classifies every "
                            "picture through its own preprocessing: its rank of the class per seed, beside its rank "
                            "on the photo itself and on a plain gray canvas (results.json judge_rank, judge_top5; "
                            "the report); its classes must be the model's, index for index")
        p.add_argument("--groups", type=positive_int, default=None, metavar="N",
                       help="split the attribution into N channel groups (factor analysis of the attributions of "
                            "the class over several images, the paper's Figs. 17-18) and render them in one batch "
                            "with the whole; the report shows each group's heat map, pictures and top channels")
        p.add_argument("--group-images", default=None, type=path_arg, metavar="DIR",
                       help="images of the class to group over: a folder (or any source a sweep takes); default: "
                            f"{GROUP_VIEWS} views of the photo itself (it, its mirror image and their 80%% center "
                            "crops), which need no other images but find the groups of this one photo, not of "
                            "the class")
    p.add_argument("--quiet", action="store_true", help="no progress bars or summary (for scripts)")


def build_parser() -> argparse.ArgumentParser:
    from attrvis_jax import __version__

    parser = _Parser(
        prog="attrvis",
        description="Attribution visualization (Shi, Li, Yamaguchi 2023) in JAX: what a CNN's "
        "contributing neurons see.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="run `attrvis COMMAND --help` for a command's options and examples",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="compile afresh: no persistent compilation cache (on by default, in "
                             "$ATTRVIS_COMPILE_CACHE or the user cache folder's xla/; "
                             "ATTRVIS_COMPILE_CACHE=0 turns it off too)")
    parser.add_argument("--version", action="version", version=f"attrvis {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name, help_):
        p = sub.add_parser(name, help=help_, description=help_, epilog=EXAMPLES.get(name),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        # the global flags again, after the command; default SUPPRESS: absent here, the value given
        # before the command stands (a default of False here overwrote `attrvis --debug run ...`)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        p.add_argument("--no-compile-cache", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return p

    p = add("demo", "the whole method on a bundled photo, offline, in a few minutes; writes a report")
    p.add_argument("--sample", default=configs.get("demo").image, type=path_arg, help="bundled photo: chelsea, coffee, rocket, motorcycle")
    _add_run_args(p, demo=True)
    p.set_defaults(func=cmd_demo)

    p = add("run", "attribute and visualize one image: PNGs, results.json and report.html in --out")
    p.add_argument("image", type=path_arg, help="image file, or a bundled photo name")
    _add_model_args(p)
    _add_run_args(p)
    p.set_defaults(func=cmd_run)

    p = add("classify", "classify an image (a path or a bundled photo: chelsea, coffee, rocket, motorcycle)")
    p.add_argument("image", type=path_arg)
    _add_model_args(p)
    p.add_argument("--top", type=positive_int, default=5, help="how many classes to show (default 5)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_classify)

    p = add("layers", "list a model's layers (name, then H x W x K)")
    _add_model_args(p)
    p.add_argument("--size", type=int, default=None, help="input size (default: the model's)")
    p.set_defaults(func=cmd_layers)

    p = add("classes", "list a model's class names (index, name)")
    _add_model_args(p)
    p.add_argument("--search", default=None, help="only names containing TEXT (case-insensitive)")
    p.set_defaults(func=cmd_classes)

    p = add("sweep", "run (or resume) a sweep: images x targets x layers x perturbations x seeds")
    p.add_argument("spec", type=path_arg, help="sweep spec, .toml or .json (fields: see the example below)")
    p.add_argument("--out", required=True, type=path_arg, help="output folder; rerunning resumes where it stopped")
    p.add_argument("--distributed", action="store_true",
                   help="multi-host: call jax.distributed.initialize() first (cluster environment)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or table")
    p.set_defaults(func=cmd_sweep)

    ablation, paper, paper_run = configs.get("ablation"), configs.get("paper").render, configs.get("paper").run
    p = add("ablation", f"the perturbation ablation ({', '.join(ablation.perturbations)}) with table and bar charts")
    p.add_argument("--images", nargs="+", default=list(ablation.images), type=path_arg,
                   help="image files, folders, bundled photos (chelsea ...) or tfds:NAME:SPLIT@A:B")
    p.add_argument("--targets", nargs="+", default=list(ablation.targets), help="class names/indices, top1 or label")
    p.add_argument("--layers", nargs="+", default=list(ablation.layers), help="layers (default: the model's default)")
    p.add_argument("--model", default=ablation.model)
    p.add_argument("--weights", default=ablation.weights, type=path_arg)
    p.add_argument("--seeds", type=positive_int, default=ablation.seeds)
    p.add_argument("--steps", type=positive_int, default=ablation.render.steps, help=f"render steps (the paper: {paper.steps})")
    p.add_argument("--lr", type=positive_float, default=ablation.render.lr,
                   help=f"render learning rate (the code: {paper.lr} over {paper.steps} steps)")
    p.add_argument("--area-weight", type=positive_float, default=ablation.render.area_weight,
                   help="λ0 of the default (relative) balance, per unit of the photo's own score "
                        f"(default {ablation.render.area_weight})")
    p.add_argument("--baseline-steps", type=positive_int, default=ablation.attribution.spatial_steps)
    p.add_argument("--path-steps", type=positive_int, default=ablation.attribution.steps)
    p.add_argument("--batch", type=positive_int, default=ablation.batch, help="visualizations per compiled batch")
    p.add_argument("--fidelity", choices=RENDER_FIDELITIES, default=ablation.render.fidelity)
    p.add_argument("--seed", type=seed_int, default=ablation.key)
    p.add_argument("--judge", default=None, metavar="MODEL",
                   help="a second network that classifies every picture (its top-5 rate and ranks join the table); "
                        "added to a finished ablation, it judges the saved pictures without rendering again")
    p.add_argument("--out", required=True, type=path_arg, help="output folder; rerunning resumes")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_ablation)

    p = add("figures", "the paper's figures (spectra, comparison, perturbations, layers, groups) as PNG + JSON")
    p.add_argument("names", nargs="+", help="'all' or figure names: spectra comparison perturbations layers groups")
    _add_model_args(p)
    p.add_argument("--out", required=True, type=path_arg, help="output folder")
    p.add_argument("--image", default="chelsea", type=path_arg, help="image file or bundled photo (default chelsea)")
    p.add_argument("--layer", default=None, help="main layer (default: the model's default layer)")
    p.add_argument("--target", default=None, help="class name or index, or top1 (the default: the image's top class)")
    p.add_argument("--schedule", choices=configs.FIGURE_SCHEDULES, default="reduced",
                   help=f"reduced: short CPU schedule (default); paper: {paper_run.seeds} seeds x {paper.steps} steps")
    p.add_argument("--seeds", type=positive_int, default=None, help="override the schedule's seeds")
    p.add_argument("--steps", type=positive_int, default=None, help="override the schedule's render steps")
    p.add_argument("--fidelity", choices=RENDER_FIDELITIES, default=None)
    p.add_argument("--seed", type=seed_int, default=0, help="PRNG seed")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_figures)

    p = add("catalog", "every channel of a layer as a feature visualization: tiles, a sprite sheet, index.html")
    _add_model_args(p)
    p.add_argument("--layer", default=None, help="layer (default: the model's default layer)")
    p.add_argument("--channels", default=None, help="indices and ranges, e.g. 0-31 or 3,7,9-12 (default: all)")
    p.add_argument("--steps", type=positive_int, default=256, help="render steps per tile (default 256)")
    p.add_argument("--lr", type=positive_float, default=None,
                   help="learning rate (default: the paper's scaled to the steps, 0.057 at 256)")
    p.add_argument("--seeds", type=positive_int, default=1, help="pictures per channel (default 1)")
    p.add_argument("--batch", type=positive_int, default=8, help="channels per compiled batch (default 8)")
    p.add_argument("--parameterization", choices=PARAMETERIZATIONS, default="fft")
    p.add_argument("--redirect-steps", type=whole_number(0), default=16,
                   help="first steps with redirected ReLU gradients, so dead channels get a picture (default 16)")
    p.add_argument("--seed", type=seed_int, default=0, help="PRNG seed (default 0)")
    p.add_argument("--out", required=True, type=path_arg, help="output folder; rerunning resumes")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_catalog)

    p = add("weights", "list, verify or convert checkpoints")
    p.add_argument("action", choices=["list", "verify", "convert"])
    p.add_argument("name", nargs="?", help="model name")
    p.add_argument("path", nargs="?", type=path_arg, help="a .pth file (default: the manifest's checkpoint)")
    p.add_argument("--out", type=path_arg, help="output .npz for convert (default: NAME.npz)")
    p.add_argument("--sha256", help="expected sha256 when verifying a file of your own")
    p.set_defaults(func=cmd_weights)
    return parser


@contextlib.contextmanager
def _deprecations_shown():
    """An old spelling in what the user gave (a sweep spec's [render] constant) is one line on
    stderr, "attrvis: warning: ...": Python shows a DeprecationWarning only in a script's own code."""
    import warnings

    from attrvis_jax.errors import AttrvisDeprecationWarning

    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, AttrvisDeprecationWarning):
            print(f"attrvis: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("default", AttrvisDeprecationWarning)
        warnings.showwarning = show
        yield


def main(argv: list[str] | None = None) -> int:
    from attrvis_jax.errors import AttrvisError, UnknownNameError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from attrvis_jax.apps import compile_cache

    compile_cache.enable(off=args.no_compile_cache)  # before the command compiles anything
    try:
        with _deprecations_shown():
            return args.func(args)
    except (UsageError, UnknownNameError) as e:
        if args.debug:
            raise
        print(f"attrvis: error: {e}", file=sys.stderr)
        return 2
    except AttrvisError as e:
        if args.debug:
            raise
        print(f"attrvis: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # the reader went away (`attrvis classes | head`): stop quietly, as cat does
        _quiet_stdout()
        return 141  # 128 + SIGPIPE, what a shell reports for a pipeline cut short
    except MemoryError:
        if args.debug:
            raise
        print("attrvis: error: out of memory: fewer seeds, a smaller --batch or image size, or a machine with more "
              "memory", file=sys.stderr)
        return 1
    except OSError as e:  # the last net: fileio raises WriteError (an AttrvisError) for its own writes
        if args.debug:
            raise
        where = f"{e.filename}: " if e.filename else ""
        print(f"attrvis: error: {where}{e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        hint = "; rerun the same command to resume" if args.command in ("sweep", "ablation", "catalog") else ""
        print(f"attrvis: interrupted{hint}", file=sys.stderr)
        _settle()
        if argv is None:  # the command itself (not a caller's main([...])): leave now
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        return 130


def _quiet_stdout() -> None:
    """Point stdout at /dev/null: Python's own flush at exit would fail on the closed pipe again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (a test's capture): nothing to redirect
        pass


def _settle() -> None:
    """After an interrupt: wait for device work still in flight. The command then leaves with
    os._exit, skipping the interpreter's teardown: an interrupt can stop JAX midway (a callback, a
    transfer), and tearing XLA's client down under it crashed now and then (exit 139). Results are
    safe either way: files are written atomically and the store commits per batch."""
    if "jax" not in sys.modules:
        return
    try:
        import jax

        jax.block_until_ready(jax.live_arrays())
    except BaseException:  # noqa: BLE001 - a second Ctrl-C, or an array that failed: leave anyway
        pass


if __name__ == "__main__":
    sys.exit(main())
