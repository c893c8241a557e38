"""`visualize(model, attribution, config, key)`: the method's picture, seeds of one objective.

A thin face over the kernel (`optimize.visualize_rows`): the attribution becomes an objective
(`objectives.attribution_objective`; a feature objective passes through), seed i runs on the row
key fold_in(key, i), and the device arrays come back as a `RenderResult` of numpy arrays.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from attrvis_jax import _deprecated
from attrvis_jax.config import RenderConfig, RunOptions, split_options
from attrvis_jax.devices import gather
from attrvis_jax.errors import AttrvisError
from attrvis_jax.render.objectives import Objective, area_terms, attribution_objective
from attrvis_jax.render.optimize import Progress, seed_keys, visualize_rows


@dataclasses.dataclass(frozen=True, eq=False)
class RenderResult:
    """What `visualize` returns. Axes: S seeds, then G groups only if the attribution had groups.

    images: X (S, [G,] H, W, 3) and masks: M (S, [G,] H, W), both in [0, 1], untransformed.
    composed: background·(1 − M) + X·M (the published picture; background 0.55, paper 0.5).
    loss: (S,) the loss of each seed's last update; mask_area: mean M, (S, [G]).
    beta, lambda0: ([G]) as used; reference: L(photo) the relative balance divided by ([G]; NaN
    on the code balance). finite: (S,) False for a seed stopped by a non-finite loss or
    gradient, at update `stopped_at` (−1: ran to the end). loss_history: (S, steps), NaN after a stop.
    snapshots: {step: {"images", "masks", "composed"}} after that many updates.
    timings: compile_s (first compile in this call, 0 if cached) and run_s (all chunks).
    `save(folder)` writes the pictures, masks, arrays and numbers (the files `attrvis run` writes
    of a render); `RenderResult.load(folder)` reads them back.
    """

    images: np.ndarray
    masks: np.ndarray
    composed: np.ndarray
    loss: np.ndarray
    mask_area: np.ndarray
    beta: np.ndarray
    lambda0: np.ndarray
    reference: np.ndarray
    finite: np.ndarray
    stopped_at: np.ndarray
    loss_history: np.ndarray
    snapshots: dict
    config: RenderConfig
    options: RunOptions
    layer: str | None
    seed_ids: tuple[int, ...]
    grouped: bool
    timings: dict

    @property
    def seeds(self) -> int:
        return len(self.seed_ids)

    def _repr_html_(self) -> str:
        """Each seed's picture (the composed one) and mask, with its numbers; 25 seeds at most."""
        from attrvis_jax import pictures

        cells = []
        for i, seed in enumerate(self.seed_ids[:25]):
            composed = self.composed[i] if not self.grouped else np.concatenate(list(self.composed[i]), axis=1)
            mask = self.masks[i] if not self.grouped else np.concatenate(list(self.masks[i]), axis=1)
            area = float(np.mean(self.mask_area[i]))
            pictures_html = pictures.img_tag(composed, 160 * (composed.shape[1] // composed.shape[0]), f"seed {seed}")
            if self.config.has_mask:
                pictures_html += pictures.img_tag(mask, 160 * (mask.shape[1] // mask.shape[0]), f"seed {seed} mask")
            numbers = f"seed {seed} · loss {float(self.loss[i]):.4g}" + (f" · area {area:.3f}" if self.config.has_mask else "")
            if not self.finite[i]:
                numbers += f" · stopped at {int(self.stopped_at[i])}"
            cells.append(f"<div style='display:inline-block;margin:4px;vertical-align:top'>{pictures_html}"
                         f"<div style='font-size:12px;color:#445'>{numbers}</div></div>")
        more = f"<p style='color:#667'>… and {self.seeds - 25} more seeds</p>" if self.seeds > 25 else ""
        return f"<div><p style='font-size:13px'>{self.summary()}</p>{''.join(cells)}{more}</div>"

    def show(self) -> None:
        """Display `_repr_html_` in the running notebook (lucid's `show`)."""
        from attrvis_jax import pictures

        pictures.show(self)

    # ---- files ---------------------------------------------------------------------------------
    def save(self, folder, attribution=None, *, overwrite: bool = False) -> Path:
        """Write the render into `folder`: seedNN.png (the composed picture) and seedNN_mask.png per
        seed, render.npz (the arrays, for `load`) and results.json (the numbers); with the
        `Attribution` it was made from, also its attribution.npz, heatmap.png and input.png — the
        files `attrvis run` writes, apart from its metrics, contact sheet and report
        (`attrvis_jax.outputs` lists them). The folder is written whole, atomically; one holding an
        earlier result is replaced only with `overwrite=True`, and a file of yours of one of
        those names never (refused before anything is written). Returns the folder."""
        from attrvis_jax import outputs

        return outputs.save(self, folder, attribution, overwrite=overwrite)

    @classmethod
    def load(cls, folder) -> "RenderResult":
        """The result `save` (or `attrvis run`) wrote into `folder` (or its render.npz): the arrays as
        they were, composed computed again from them; snapshots are not kept."""
        from attrvis_jax import outputs

        return cls(**outputs.read(folder))

    def summary(self) -> str:
        """One line: perturbation, layer, seeds × steps, mean mask area against β, final loss."""
        area = self.mask_area.reshape(self.seeds, -1).mean(axis=1)
        beta = float(np.mean(self.beta))
        stopped = int(np.sum(~self.finite))
        return (f"{self.config.perturbation} at {self.layer}: {self.seeds} seeds x {self.config.steps} steps, "
                f"mask area {area.mean():.3f} (beta {beta:.3f}), final loss {np.nanmean(self.loss):.4g}"
                + (f", {stopped} seed(s) stopped on a non-finite loss" if stopped else ""))



@_deprecated.renamed_parameters(r_plus="positive")
def visualize(
    model,
    attribution=None,
    config: RenderConfig | None = None,
    key: jax.Array | None = None,
    *,
    layer: str | None = None,
    positive=None,
    beta=None,
    lambda0=None,
    activations=None,
    baseline=None,
    reference=None,
    seed_ids: Sequence[int] | None = None,
    variables: Any = None,
    options: RunOptions | None = None,
    mesh=None,
    progress: Progress | None = None,
    **overrides,
) -> RenderResult:
    """Optimize images and masks whose layer-`layer` response follows the attribution R⁺.

    model: an `attrvis_jax.Model` (only `net`, `variables`, `input_size`, `resolve_layer` and
        `layer_shapes` are used). attribution: see `objectives.attribution_objective` — an
        `attribute` result (its `positive`, `beta`, `lambda0`, `activations`, `baseline`,
        `layer`), a list of them (groups), or (positive, beta, lambda0) arrays; the keyword arrays
        override. Or an `objectives.Objective` (e.g. `objectives.channel(model, layer, k)`, any sum
        of objectives, `objectives.from_function(...)`) with perturbation "none": a plain feature
        visualization.
    config / options / overrides: what it computes (`RenderConfig`), how it runs (`RunOptions`:
        seeds, snapshots, chunking), and fields of either by name (`steps=256, seeds=2`).
    key: PRNG key (default key 0); seed i uses fold_in(key, i). seed_ids: which seeds to run
        (default range(options.seeds)); running [3] alone gives seed 3 of a batched run.
    mesh: a `devices.device_mesh()` to split the seeds over (their count a multiple of its size).
    progress: called as progress(done, total) after every chunk.
    """
    config, options = split_options(config, options, overrides)
    if isinstance(attribution, Objective):
        given = [n for n, v in (("positive", positive), ("beta", beta), ("lambda0", lambda0), ("activations", activations),
                                ("baseline", baseline), ("reference", reference)) if v is not None]
        if given:
            raise AttrvisError(f"{', '.join(given)} apply to an attribution, not to an objective (it has its weights)")
        objective = attribution
    else:
        objective = attribution_objective(attribution, config, positive=positive, beta=beta, lambda0=lambda0,
                                          activations=activations, baseline=baseline, reference=reference)
    seed_ids = tuple(range(options.seeds)) if seed_ids is None else tuple(int(i) for i in seed_ids)
    if not seed_ids:
        raise AttrvisError("no seeds to run")
    out = visualize_rows(model, objective, config, seed_keys(key, seed_ids), layer=layer, mesh=mesh,
                         variables=variables, options=options, progress=progress)
    grouped = objective.grouped
    snapshots = {t: _pack(x, m, c, grouped) for t, (x, m, c) in out.snapshots.items()}
    final = _pack(out.images, out.masks, out.composed, grouped)
    finite = gather(out.finite)
    if not finite.all():
        bad = [seed_ids[i] for i in np.flatnonzero(~finite)]
        warnings.warn(f"seed(s) {bad} stopped on a non-finite loss or gradient; their images are the last "
                      "finite ones (see RenderResult.finite / stopped_at)", stacklevel=2)
    area = final["masks"].mean(axis=(-2, -1))
    unbatch = (lambda a: np.asarray(a)) if grouped else (lambda a: np.asarray(a)[0])
    beta, lambda0, reference = area_terms(objective)
    return RenderResult(
        images=final["images"], masks=final["masks"], composed=final["composed"],
        loss=gather(out.loss), mask_area=area,
        beta=unbatch(beta), lambda0=unbatch(lambda0), reference=unbatch(reference),
        finite=finite, stopped_at=gather(out.stopped_at), loss_history=gather(out.loss_history),
        snapshots=snapshots, config=config, options=options, layer=out.layer, seed_ids=seed_ids, grouped=grouped,
        timings={"compile_s": out.compile_s, "run_s": out.run_s, "steps": config.steps, "seeds": len(seed_ids)},
    )


def _pack(x, m, composed, grouped: bool) -> dict:
    """Host arrays, the group axis dropped where the source had none."""
    x, m, composed = gather(x), gather(m), gather(composed)
    if not grouped:
        x, m, composed = x[:, 0], m[:, 0], composed[:, 0]
    return {"images": x, "masks": m, "composed": composed}
