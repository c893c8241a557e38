"""The paper's figures (§4.1, Figs. 5–8, 16–18) as functions, and `run_all` to make them all at once.

    from attrvis_jax.apps.figures import run_all
    run_all("efficientnet_lite0", "figs", schedule="reduced")     # a few PNG + JSON pairs

Every figure is a function `fig_<name>(model, out_dir, *, schedule, key, ...) -> dict` that writes
`<name>.png` and `<name>.json` atomically; the JSON holds the numbers behind the picture and a
`caption` naming the model, layer, class, seeds, steps and fidelity (the same caption is drawn on
the PNG). `FIGURES` maps the names to the functions, in the order `run_all` runs them:

    spectra        Fig. 5: log-amplitude spectra of every perturbation's background (2-D + radial)
    comparison     Figs. 6–7: (a) all feature maps, (b) NMF-factorized maps, (c) class-targeted
                   neurons, (d) ours without mask, (e) ours (pyramid), with PCC and top-5 consistency
    perturbations  Fig. 8: the five perturbations and the no-mask ablation, several seeds
    layers         Fig. 16: attribution visualizations at every stage of the network
    groups         Figs. 17–18: the integral visualization beside its channel-group visualizations

Sharing: a `FigureContext` holds the image, layer, class and schedule, and caches the attributions
(one per layer) and the renders (one per layer × perturbation). `run_all` uses one context, so the
attribution of the main layer is computed once, the comparison's (d) and (e) columns *are* the
perturbation figure's "none" and "pyramid" columns and the group figure's integral, and the layer
figure reuses the main layer's attribution and render.

Each figure is computed by a `compute_<name>` function (arrays and numbers, no drawing) and drawn by
a `draw_<name>` function (arrays and numbers in, a uint8 picture out). Image grids are PIL contact
sheets (`report.contact_sheet`) under a title band; the spectra use matplotlib's Agg backend.

The modules: `schedule` (Schedule, get_schedule), `context` (FigureContext, the forward pass and metric
summaries), `analysis` (the pure pieces: NMF, the class-targeted rule, spectra), `layout` (grids,
cells, writing), one module per figure (`spectra`, `comparison`, `perturbations`, `layers`,
`groups`) and `run` (FIGURES, run_all). This package re-exports what its users call.

Schedules: `SCHEDULES["paper"]` is the published one (2048 updates, 25 seeds, the default
AttributionConfig); `SCHEDULES["reduced"]` is a short one for CPUs. Both are views (`Schedule`) of
the presets in `attrvis_jax.configs`.
"""

from __future__ import annotations

from attrvis_jax import _deprecated, config
from attrvis_jax.apps.figures import analysis, comparison, context, groups, layers, layout, spectra
from attrvis_jax.apps.figures.comparison import compute_comparison, draw_comparison, fig_comparison
from attrvis_jax.apps.figures.context import FigureContext
from attrvis_jax.apps.figures.groups import compute_groups, draw_groups, fig_groups
from attrvis_jax.apps.figures.layers import compute_layers, draw_layers, fig_layers
from attrvis_jax.apps.figures.perturbations import compute_perturbations, draw_perturbations, fig_perturbations
from attrvis_jax.apps.figures.run import FIGURES, run_all
from attrvis_jax.apps.figures.schedule import SCHEDULES, Schedule, get_schedule
from attrvis_jax.apps.figures.spectra import compute_spectra, draw_spectra, fig_spectra

# What a user calls: the figures (run_all, each fig_<name>, and its compute_/draw_ halves), the
# context they share and the schedules. The pieces (layout constants, the analysis, the forward
# pass) are imported from their modules.
__all__ = [
    "FIGURES", "FigureContext", "SCHEDULES", "Schedule",
    "compute_comparison", "compute_groups", "compute_layers", "compute_perturbations", "compute_spectra",
    "draw_comparison", "draw_groups", "draw_layers", "draw_perturbations", "draw_spectra",
    "fig_comparison", "fig_groups", "fig_layers", "fig_perturbations", "fig_spectra",
    "get_schedule", "run_all",
]

# Names this package re-exported before its list was curated: importable from their modules, and
# from here for one release with a warning.
_MOVED = {
    **dict.fromkeys(("amplitude_spectrum", "comparison_maps", "nmf", "radial_profile", "select_class_neurons",
                     "spectral_slope"), analysis),
    "comparison_objective": comparison,
    **dict.fromkeys(("FORWARD_BATCH", "forward", "head", "layer_label", "render_record"), context),
    **dict.fromkeys(("VIEWS", "make_views"), groups),
    "stage_layers": layers,
    **dict.fromkeys(("CAPTION_H", "CELL_PAD", "CHAR_W", "TITLE_LINE", "TITLE_PAD", "blank", "grid_figure",
                     "grid_size", "heat_cell", "wrap_title"), layout),
    **dict.fromkeys(("SPECTRA_DPI", "SPECTRA_FIGSIZE"), spectra),
    **dict.fromkeys(("AttributionConfig", "RenderConfig"), config),
}
__getattr__ = _deprecated.module_getattr(__name__, {
    name: (f"{module.__name__}.{name}", lambda module=module, name=name: getattr(module, name))
    for name, module in _MOVED.items()})
