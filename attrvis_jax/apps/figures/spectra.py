"""Fig. 5: log-amplitude spectra of every perturbation's background (2-D and radial)."""

from __future__ import annotations

import io
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from attrvis_jax.apps.figures.analysis import amplitude_spectrum, radial_profile, spectral_slope
from attrvis_jax.apps.figures.context import FigureContext
from attrvis_jax.apps.figures.layout import _write
from attrvis_jax.apps.figures.schedule import Schedule
from attrvis_jax.config import RenderConfig


SPECTRA_FIGSIZE = (15.0, 9.0)  # inches; at SPECTRA_DPI the PNG is exactly 1500 × 900 pixels
SPECTRA_DPI = 100


def compute_spectra(x: np.ndarray, key: jax.Array, draws: int = 8, fidelity: str = "code") -> dict:
    """Log-amplitude spectra of what each perturbation puts where the mask is 0 (docs/method.md, 'Perturbations').

    constant: the gray 0.55 (paper 0.5). gaussian: clip(N(0, 1), 0, 1). blur: the photo blurred with
    the pyramid's σ = 10 (M = 0) and σ = 4 levels. fractal: the single fractal noise (sd 0.19, decay
    1.5). pyramid 0..5: the six levels (sd 0.20 → 0.15, decay 1.5 → 1.0). photo: the input, for a
    natural reference. Random backgrounds are averaged over `draws` draws.
    Returns {"names", "amplitude" (n, H, W), "radii", "profiles" (n, R), "slopes", "dc"}.
    """
    from attrvis_jax.render import noise, perturb

    n = int(x.shape[0])
    k_gauss, k_fractal, k_pyramid = jax.random.split(key, 3)
    constant = RenderConfig(fidelity=fidelity).background
    blur = np.asarray(perturb.blur_levels(jnp.asarray(x)[None]))[0]  # (6, n, n, 3): σ 10, 8, 6, 4, 2, X
    pyramid = np.asarray(noise.noise_pyramid(k_pyramid, (draws,), n, n))  # (draws, 6, n, n, 3)
    backgrounds = {
        "constant": np.full((1, n, n, 3), constant, np.float32),
        "gaussian": np.clip(np.asarray(perturb.gaussian_background(k_gauss, (draws, n, n, 3))), 0.0, 1.0),
        "blur s=10": blur[0][None],
        "blur s=4": blur[3][None],
        "fractal": np.asarray(noise.fractal_noise(k_fractal, (draws,), n, n)),
        **{f"pyramid {d}": pyramid[:, d] for d in range(pyramid.shape[1])},
        "photo": np.asarray(x)[None],
    }
    names = list(backgrounds)
    amplitude = np.stack([amplitude_spectrum(backgrounds[k]) for k in names])
    profiles = []
    for a in amplitude:
        radii, p = radial_profile(a)
        profiles.append(p)
    profiles = np.stack(profiles)
    return {
        "names": names,
        "amplitude": amplitude,
        "radii": radii,
        "profiles": profiles,
        "slopes": {k: spectral_slope(radii, p) for k, p in zip(names, profiles)},
        "dc": {k: float(a[0, 0]) for k, a in zip(names, amplitude)},
        "sd_decay": {"fractal": [noise.FRACTAL_SD, noise.FRACTAL_DECAY],
                     **{f"pyramid {d}": [noise.PYRAMID_SD[d], noise.PYRAMID_DECAY[d]] for d in range(pyramid.shape[1])}},
        "draws": draws,
    }


def draw_spectra(data: dict, title: Sequence[str]) -> np.ndarray:
    """2-D log10 amplitude spectra (DC centered, one color scale) above the radial profiles."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names, amplitude = data["names"], data["amplitude"]
    floor = 1e-7
    logs = np.log10(np.maximum(amplitude, floor))
    finite = logs[[i for i, k in enumerate(names) if k != "constant"]]
    vmin, vmax = float(np.percentile(finite, 1)), float(np.max(finite))
    fig = Figure(figsize=SPECTRA_FIGSIZE, dpi=SPECTRA_DPI)
    FigureCanvasAgg(fig)
    columns = math.ceil(len(names) / 2)
    grid = fig.add_gridspec(3, columns, height_ratios=[1, 1, 1.5], hspace=0.35, wspace=0.15,
                            left=0.05, right=0.94, top=0.88, bottom=0.07)
    for i, name in enumerate(names):
        ax = fig.add_subplot(grid[i // columns, i % columns])
        im = ax.imshow(np.fft.fftshift(logs[i]), cmap="magma", vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    cax = fig.add_axes([0.95, 0.45, 0.008, 0.4])
    bar = fig.colorbar(im, cax=cax)
    bar.ax.tick_params(labelsize=7)
    bar.set_label("log10 amplitude", fontsize=8)
    ax = fig.add_subplot(grid[2, : columns - 1])
    radii = data["radii"][1:]
    cmap = colormaps["viridis"]
    for i, name in enumerate(names):
        p = np.maximum(data["profiles"][i][1:], floor)
        if name.startswith("pyramid"):
            d = int(name.split()[1])
            style = {"color": cmap(d / 6), "lw": 1.6}
        else:
            style = {"color": {"constant": "0.5", "gaussian": "tab:red", "blur s=10": "tab:blue",
                               "blur s=4": "tab:cyan", "fractal": "tab:orange", "photo": "black"}[name],
                     "lw": 1.8, "ls": "--" if name == "photo" else "-"}
        slope = data["slopes"][name]
        label = f"{name} (slope {slope:.2f})" if slope is not None else f"{name} (0 beyond DC)"
        ax.loglog(radii, p, label=label, **style)
    ax.set_xlabel("spatial frequency (cycles per image)")
    ax.set_ylabel("mean amplitude |FFT| / (H W)")
    ax.set_ylim(floor * 0.5, None)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.suptitle("\n".join(title), fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=SPECTRA_DPI)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def fig_spectra(model, out_dir, *, schedule: str | Schedule = "reduced", key=None, image="chelsea",
                layer=None, target=None, context: FigureContext | None = None, quiet: bool = True) -> dict:
    """Fig. 5: amplitude spectra of the perturbations' backgrounds (computed with render.perturb and
    render.noise). Shows that constant has only DC, Gaussian is flat (white), blur falls off fast,
    fractal noise is one 1/f^1.5 slope and the pyramid spans slopes from −1.5 to −1 (a spread of
    natural-image-like spectra, like the photo's)."""
    ctx = context or FigureContext(model, schedule=schedule, key=key, image=image, layer=layer, target=target,
                                   quiet=quiet)
    data = compute_spectra(ctx.x, jax.random.fold_in(ctx.render_key, 5), ctx.schedule.spectrum_draws,
                           ctx.schedule.fidelity)
    title = ["Fig. 5 analogue: log10 amplitude spectra of each perturbation's background (DC centered) "
             "and their radial profiles", ctx.caption_line() + f" | {data['draws']} noise draws averaged"]
    picture = draw_spectra(data, title)
    record = {
        "caption": " ".join(title),
        "meta": ctx.meta(spectrum_draws=data["draws"]),
        "names": data["names"],
        "dc": data["dc"],
        "slopes": data["slopes"],
        "sd_decay": data["sd_decay"],
        "radii": data["radii"].tolist(),
        "profiles": {k: [float(f"{v:.6g}") for v in p] for k, p in zip(data["names"], data["profiles"])},
        "layout": {"height": int(picture.shape[0]), "width": int(picture.shape[1]),
                   "figsize": list(SPECTRA_FIGSIZE), "dpi": SPECTRA_DPI},
    }
    return _write(out_dir, "spectra", picture, record)
