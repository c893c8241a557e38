"""Frozen, hashable settings for each stage of the pipeline (usable as `jax.jit` static arguments).

Every constant is explained in docs/method.md; where the authors' released code and the paper's text
disagree, `fidelity="code"` (the attribution's default) picks the code's behaviour and
`fidelity="paper"` the text's. The render's default is `fidelity="default"` (docs/defaults.md).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers

from attrvis_jax import _deprecated
from attrvis_jax.errors import AttrvisError

FIDELITIES = ("code", "paper")
# The render stage has a third value, its default: the authors' code with the generalizations that
# make it work on every model (RenderConfig's docstring, benchmarks/README.md "Fidelity"): a
# scale-free balance, an area term without border bias, signed layers excited in the direction that
# contributed, and a mask that starts at β with a smoother spectrum.
RENDER_FIDELITIES = ("default", "code", "paper")
BALANCES = ("relative", "code")
AREA_TERMS = ("visible", "code")
DIRECTIONS = ("signed", "positive")
MASK_STARTS = ("beta", "half")
RIEMANN_RULES = ("right", "left", "midpoint", "trapezoid", "gauss_legendre")


def attribution_fidelity(fidelity: str) -> str:
    """The attribution stage's fidelity for a run's fidelity: the default follows the code there
    (β by the code's Otsu, λ0 = 20·ΣR_f kept for `balance="code"`)."""
    return "paper" if fidelity == "paper" else "code"


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise AttrvisError(message)


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)  # True is an int to Python


def _is_float(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


# The field annotations used by the configs -> (test, what the error calls it).
_FIELD_TYPES = {
    "int": (_is_int, "a whole number"),
    "float": (_is_float, "a finite number"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "tuple[int, ...]": (lambda v: isinstance(v, (tuple, list)) and all(map(_is_int, v)), "a list of whole numbers"),
    "tuple[str, ...]": (lambda v: isinstance(v, (tuple, list)) and all(isinstance(x, str) for x in v),
                        "a list of strings"),
}


def _shown(value) -> str:
    return f"{value!r} ({type(value).__name__})"


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric field can mean: lo..hi, each end open or closed. Every int and float
    field of every config has one (`RANGES`; a test checks it), so a value nobody can mean (a
    negative growth, an lr of 1e9) is refused where it enters instead of giving NaN or saturated
    pictures later."""

    lo: float
    hi: float
    lo_open: bool = False
    hi_open: bool = False
    why: str = ""

    def __contains__(self, value) -> bool:
        above = value > self.lo if self.lo_open else value >= self.lo
        below = value < self.hi if self.hi_open else value <= self.hi
        return above and below

    def __str__(self) -> str:
        return f"{'(' if self.lo_open else '['}{_number(self.lo)}, {_number(self.hi)}{')' if self.hi_open else ']'}"


def _number(v) -> str:
    return f"{v:,}".replace(",", "_") if isinstance(v, int) and abs(v) >= 10_000 else f"{v:g}"


# Seeds: JAX (without x64) keys a PRNG with the low 32 bits of the seed only, so 2**32 would give
# the key of 0 and -1 that of 4294967295; outside this range a seed is refused rather than aliased.
SEED_MAX = 2**32 - 1
SEED_RANGE = Range(0, SEED_MAX, why="JAX seeds are 32-bit")
MANY = 1_000_000  # the most updates, seeds, samples ... any count here can mean (2048 is the paper's)


def check_seed(value, name: str = "seed") -> int:
    """`value` as a seed: a whole number in SEED_RANGE, else one AttrvisError naming `name`."""
    _check(_is_int(value), f"{name} must be a whole number, got {_shown(value)}")
    _check(value in SEED_RANGE, f"{name} must be in {SEED_RANGE} ({SEED_RANGE.why}), got {value}")
    return int(value)


def _check_types(config, skip: tuple[str, ...] = ()) -> None:
    """Every field of `config` has its annotated type (None only where the annotation allows it)
    and, if numeric, lies in its `RANGES` entry; the error names the field. Rules that tie fields
    together are checked by each class's __post_init__."""
    ranges = RANGES.get(type(config).__name__, {})
    for field in dataclasses.fields(config):
        if field.name in skip or field.type not in _FIELD_TYPES and not field.type.endswith(" | None"):
            continue
        value, optional = getattr(config, field.name), field.type.endswith(" | None")
        test, what = _FIELD_TYPES[field.type.removesuffix(" | None")]
        _check((value is None and optional) or (value is not None and test(value)),
               f"{field.name} must be {what}{' or None' if optional else ''}, got {_shown(value)}")
        bounds = ranges.get(field.name)
        values = value if isinstance(value, (tuple, list)) else () if value is None else (value,)
        for v in values if bounds is not None else ():
            if isinstance(v, (int, float)) and v not in bounds:
                raise AttrvisError(f"{field.name} must be in {bounds}{f' ({bounds.why})' if bounds.why else ''}, "
                                   f"got {_number(v)}")


def _counts(lo: int, *names: str) -> dict:
    return {name: Range(lo, MANY) for name in names}


_UNIT = Range(0, 1)
_RATE = Range(0, 1, lo_open=True, why="a learning rate above 1 moves the Fourier coefficients far past their scale in one step")
# field -> Range, per config class (the values each field can mean; see Range).
RANGES = {
    "AttributionConfig": {
        **_counts(0, "spatial_steps", "channel_steps"),
        **_counts(1, "steps", "chunk", "smoothgrad_samples"),
        "spatial_lr": _UNIT, "channel_lr": _UNIT,
        "proximity": Range(0, 1e6),
        "smoothgrad_noise": Range(0, 10, why="a fraction of the activations' range"),
        "channel_threshold": Range(0, 1, lo_open=True),
        "heatmap_percentile": Range(0, 100),
    },
    "RenderConfig": {
        **_counts(1, "steps", "decay_steps"), **_counts(0, "relu_redirect_steps"),
        "lr": _RATE,
        "lr_decay": Range(0, 1, lo_open=True, why="lr(t) = lr·lr_decay^(t/decay_steps) decays; 1 keeps it constant"),
        "lambda_growth": Range(1, 10, why="λ(t) = λ0·growth^(t/decay_steps) grows; 1 keeps it constant"),
        "area_weight": Range(0, 1e4, lo_open=True),
        "init_sd": Range(0, 1, lo_open=True, why="the initial Fourier coefficients' sd; 0.01 by default, larger saturates"),
        "decay_power": Range(0, 4), "mask_decay_power": Range(0, 4),
        "background_gray": Range(0, 1, why="a gray level"),
        "image_size": Range(8, 4096),
    },
    "RunOptions": _counts(1, "seeds", "chunk_size", "snapshot_steps", "seed_batch"),
    "SweepConfig": {**_counts(1, "seeds", "batch", "limit", "chunk_size", "groups"), "key": SEED_RANGE},
    "CatalogConfig": {**_counts(1, "seeds", "batch"), **_counts(0, "channels"), "key": SEED_RANGE},
}


# Fields renamed since, per config class: old spelling -> new. The old spelling keeps working for one
# release, with an AttrvisDeprecationWarning: as a keyword of the class, in `replace`, `from_dict`
# and `visualize`'s overrides. Records an earlier version wrote (sweep fingerprints and sweep.json,
# catalog records) are read through `current_fields`, without a warning: the user wrote none of them.
RENAMED_FIELDS = {"RenderConfig": {"constant": "background_gray"}}


def current_fields(cls, d: dict, where: str | None = None) -> dict:
    """`d` (fields of config class `cls`, by name) with renamed fields under their current names;
    with `where` (what the caller was called as) each old name warns."""
    renames = RENAMED_FIELDS.get(getattr(cls, "__name__", cls), {})
    if not any(old in d for old in renames):
        return d
    if where is not None:
        return _deprecated.renamed_keywords(dict(d), renames, where)
    both = [old for old, new in renames.items() if old in d and new in d]
    _check(not both, f"{cls.__name__} fields {both} given under their old and their new names")
    return {renames.get(k, k): v for k, v in d.items()}


def _accepts_renamed_fields(cls):
    """Class decorator: the config's __init__ also takes its RENAMED_FIELDS' old names (warning).
    The class stays a plain frozen dataclass, hashable and usable as a static argument."""
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        init(self, *args, **current_fields(cls, kwargs, cls.__name__))

    cls.__init__ = __init__
    return cls


class _ConfigMethods:
    """replace / to_dict / from_dict shared by the frozen config dataclasses."""

    def replace(self, **changes):
        """A copy with some fields changed; unknown field names are a clear error."""
        changes = current_fields(type(self), changes, f"{type(self).__name__}.replace")
        fields = {f.name for f in dataclasses.fields(self)}
        bad = sorted(set(changes) - fields)
        _check(not bad, f"unknown {type(self).__name__} field(s) {bad}; valid: {sorted(fields)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        """Inverse of `to_dict` (JSON lists become tuples again); unknown keys, e.g. fields a newer
        version added, are ignored and missing ones take their defaults; renamed fields are read
        under their old names too (with a warning)."""
        d = current_fields(cls, d, f"{cls.__name__}.from_dict")
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in fields})


@dataclasses.dataclass(frozen=True)
class AttributionConfig(_ConfigMethods):
    """The attribution stage: baseline, path integral, post-processing (docs/method.md).

    Where code and paper differ (`fidelity`):
      - β (area ratio): code = Otsu on the min-max-normalized, resized, uint8, 3×3-blurred channel
        sum of the filtered map, 256 bins, halved; paper = Otsu with 200 bins on the raw map, not halved.
      - λ0: code = 20·ΣR_f (filtered, signed); paper = ΣR.
      - SmoothGrad on hidden layers: code min-max renormalizes every noisy copy to [0, 1];
        paper (Smilkov et al.) does not.
    """

    fidelity: str = "code"

    # Output-targeted baseline (docs/method.md, 'The baseline'): two mask optimizations with Adam, combined by minimum.
    spatial_steps: int = 2049  # the code's range(2048 + 1) updates
    spatial_lr: float = 0.009
    channel_steps: int = 4097
    channel_lr: float = 0.01
    proximity: float = 16.0  # weight of (1/Σ|a|)·Σ|m·a − a| against |z_c(m⊙a)|

    # Path integral (docs/method.md, 'The attribution'): R = (a − b) ⊙ Σ_m w_m ∇z_c(b + α_m (a − b)).
    steps: int = 200
    rule: str = "right"  # the code's linspace(1/S, 1, S); also left, midpoint, trapezoid, gauss_legendre
    chunk: int = 32  # path points per batched gradient evaluation: bounds memory (captum's internal_batch_size)
    scale_by_logit: bool = False  # the code multiplies R by z_c(a); we use |z_c(a)| so no sign flip

    # SmoothGrad (a comparison method; docs/method.md, 'The attribution').
    smoothgrad_samples: int = 100
    smoothgrad_noise: float = 0.15  # std as a fraction of max(a) − min(a)

    # Post-processing (docs/method.md, 'Post-processing').
    channel_threshold: float = 0.95  # τ of the cumsumMax channel filter (the code's mixed4d value)
    heatmap_percentile: float = 65.0  # display heat map: entries below this percentile are zeroed

    def __post_init__(self):
        _check_types(self)
        _check(self.fidelity in FIDELITIES, f"fidelity must be one of {FIDELITIES}, got {self.fidelity!r}")
        _check(self.rule in RIEMANN_RULES, f"rule must be one of {RIEMANN_RULES}, got {self.rule!r}")



# ---- rendering (docs/method.md, 'Parameterization' to 'The loss') ----------------------------------
PERTURBATIONS = ("constant", "gaussian", "blur", "fractal", "pyramid", "none")
# The authors' names for them (their code's flags, the paper's legends).
CODE_NAMES = {"constant": "ConstBack", "gaussian": "Normal", "blur": "BlurImage", "fractal": "Noise",
              "pyramid": "NoisePyramid", "none": "No-mask"}
# What RenderConfig.perturbation accepts besides PERTURBATIONS (case-insensitive): those names and a
# few spellings.
PERTURBATION_ALIASES = {
    **{code.lower(): name for name, code in CODE_NAMES.items()},
    "const": "constant", "nomask": "none", "no_mask": "none",
}
# The gray of the constant perturbation's background, and of every composed picture's (1 − M) part
# (RenderConfig.background): the authors' code uses 0.55, the paper's text 0.5.
CODE_GRAY = 0.55
PAPER_GRAY = 0.5
TRANSFORM_SETS = ("code", "paper", "none")
RENDER_ENGINES = ("scan", "loop")
COMPUTE_DTYPES = ("float32", "bfloat16")
PARAMETERIZATIONS = ("fft", "pixel", "laplacian")
AREA_WEIGHT = 20.0  # see RenderConfig.balance and benchmarks/README.md, "fidelity"
MASK_DECAY_POWER = 1.5  # the default mask spectrum (RenderConfig.mask_decay_power)


@_accepts_renamed_fields
@dataclasses.dataclass(frozen=True)
class RenderConfig(_ConfigMethods):
    """The visualization optimizer (docs/method.md): what a render computes. Frozen and hashable: it is a
    static argument of the compiled step, so every field here is a compile-time constant. How a
    render runs (how many seeds, snapshots, chunking, the loop engine) is `RunOptions`: none of
    that changes a seed's result.

    `fidelity`: "default" (the code's constants with five generalizations, below), "code" (the
    authors' released code exactly) or "paper" (the text). Fields left at None follow it:
      - balance (`balance`): default "relative" — the attribution term is divided by the score the
        photo itself gets, s = L(vis)/L(photo), and λ0 = `area_weight` is a pure number, so the
        same setting behaves the same on networks whose activations differ in scale by orders of
        magnitude; code "code" — λ0 = 20·ΣR_f from the attribution (tuned for GoogLeNet);
      - area term (`area_term`): default "visible" — the transformed mask is weighted by 1/v(p),
        where v(p) is pixel p's expected visibility under the random transforms, so every pixel
        counts equally in expectation; code "code" — the plain mean of the transformed mask, which
        sees border pixels less often and so drains the middle of the mask first;
      - direction (`direction`): default "signed" — each neuron is pushed the way it moved from
        the baseline to the photo, weight sign(a − b)·R⁺ (= R⁺ on post-ReLU layers, where a ≥ b);
        code "positive" — weight R⁺ (correct only where a ≥ 0);
      - mask start (`mask_start`): default "beta" — logit(β) is added before the mask's sigmoid, so
        the mask starts at its target area and the optimization moves mass to where the attribution
        wants it; code "half" — M starts at 0.5 everywhere, and Adam's per-step limit on the mask's
        mean (its DC coefficient moves ≤ lr/4 per step) leaves short runs far above β;
      - mask spectrum (`mask_decay_power`): default 1.5 — the mask's Fourier basis decays as
        1/f^1.5, so the mask forms regions over the object's parts; code 1 (`decay_power`), the
        image's own 1/f basis, which on EfficientNet-Lite gives a fine texture of lines (2 gave
        saturated binary blobs that stop moving early);
    and where code and paper differ (the default follows the code):
      - the background gray (`background_gray`; the resolved value is `background`): code 0.55,
        paper 0.5; the constant perturbation's background and every composed picture's (1 − M) part;
      - λ(t) growth: code λ0·1.23^(t/decay_steps) continuous, paper ×1.2 per tenth, staircase;
      - objective: code −2·mean_ij Σ_k f·R⁺ + λ[(m_crop−β)² + (m_full−β)²],
        paper −Σ_ijk f·R⁺ + λ(mean M − β)²;
      - pyramid index (`pyramid_index`): code u = 7·M with zero beyond level 5 (the GPU gather's
        behaviour with num_levels = 8), paper u = 5·M;
      - transforms (`transforms`): code pad 12, jitter 8, scale .90–1.19, the weighted angle list,
        jitter 2; paper pad 12, jitter 9, scale .90–1.30, angle −12..12, shear −4..4, jitter 4.
    λ0 and β are taken from the attribution as given (their own fidelity decides them).

    `parameterization`: how the RGB image is parameterized: "fft" (the method's, the default: a
    Fourier spectrum scaled 1/f^decay_power, one spectrum with the mask), "pixel" (the pixels
    themselves) or "laplacian" (a sum of 4 pixel grids at scales 1 … 1/8, upsampled); all three
    with the same colour decorrelation and sigmoid (lucid's `fft_image`, `pixel_image`,
    `laplacian_pyramid`). A render with a mask keeps it a Fourier spectrum of its own.

    `relu_redirect_steps`: for the first this many updates the network's ReLUs pass gradient on
    where their own would stop a whole picture (`render.redirect`, lucid's redirected ReLU): a unit
    that the random start leaves dead (a channel that would stay gray) then gets a way in; 16 is
    a usual choice for plain feature visualizations, 0 (the default) never.

    `alpha`: plain feature visualizations (perturbation "none") get an alpha channel α (lucid's
    transparency): a Fourier channel like the method's mask, starting at 0.5, and every step the
    network sees X·α + U·(1 − α) with U uniform noise drawn anew, so only what α keeps can excite
    it. The objective reads α as `objectives.ALPHA`; subtract `objectives.alpha_area()` to make the
    picture keep no more than it needs. The result's masks are α, its composed pictures X over the
    background gray. Renders with alpha take the kernel's general path.

    `compute_dtype`: the dtype the network runs in during the render ("float32", or "bfloat16" for
    accelerators with bfloat16 matrix units): the image enters the network and the network's
    variables are cast to it, the layer's activations come back as float32; the parameters, the
    Adam state, the perturbations and the loss stay float32. Measured in benchmarks/README.md
    ("float32 against bfloat16"; on XLA:CPU bfloat16 is emulated and slower).
    """

    perturbation: str = "pyramid"  # constant | gaussian | blur | fractal | pyramid | none (or the code's names)
    fidelity: str = "default"
    steps: int = 2048  # Adam updates (the code's loop makes 2049; pass steps=2049 for parity)
    lr: float = 0.02
    lr_decay: float = 0.8  # lr(t) = lr · lr_decay^(t / decay_steps), continuous (code)
    lambda_growth: float | None = None  # None: 1.23 (code) / 1.2 (paper)
    balance: str | None = None  # None follows fidelity; "relative" | "code" (see above)
    area_weight: float = AREA_WEIGHT  # λ0 of the relative balance: area penalty per unit of s
    area_term: str | None = None  # None follows fidelity; "visible" | "code"
    direction: str | None = None  # None follows fidelity; "signed" | "positive"
    mask_start: str | None = None  # None follows fidelity; "beta" | "half" (see above)
    decay_steps: int | None = None  # None: steps // 10 (the code's int(2048 / 10) = 204)
    init_sd: float = 0.01  # sd of the initial Fourier coefficients
    decay_power: float = 1.0  # spectrum scale 1/f^decay_power of the image parameterization
    mask_decay_power: float | None = None  # the mask channel's own 1/f^p; None follows fidelity (see above)
    aligned_groups: bool = True  # every attribution group starts from the same init (code)
    background_gray: float | None = None  # the background gray; None: 0.55 (code, default) / 0.5 (paper)
    gaussian_trainable: bool = False  # the code's Normal background is a trainable variable
    blur_kernel: str = "symmetric"  # symmetric: odd kernel, reflect padding; code: even kernel, zero padding
    pyramid_index: str | None = None  # None follows fidelity; "code" (u = 7M, zero fill) | "paper" (u = 5M)
    transforms: str | None = None  # None follows fidelity; "code" | "paper" | "none"
    image_size: int | None = None  # None: the model's input size
    compute_dtype: str = "float32"  # the network's dtype in the render: float32 | bfloat16 (see above)
    parameterization: str = "fft"  # the RGB image's: fft | pixel | laplacian (see above); the mask stays fft
    relu_redirect_steps: int = 0  # the first updates run with redirected ReLU gradients (see above); 0: none
    alpha: bool = False  # plain feature visualizations with an alpha channel (see above)

    def __post_init__(self):
        _check_types(self)
        name = str(self.perturbation)
        name = PERTURBATION_ALIASES.get(name.lower(), name.lower())
        _check(name in PERTURBATIONS, f"perturbation must be one of {PERTURBATIONS} (or the code's "
               f"{', '.join(CODE_NAMES[p] for p in PERTURBATIONS if p != 'none')}), got {self.perturbation!r}")
        object.__setattr__(self, "perturbation", name)
        _check(self.fidelity in RENDER_FIDELITIES, f"fidelity must be one of {RENDER_FIDELITIES}, got {self.fidelity!r}")
        for name, values in (("balance", BALANCES), ("area_term", AREA_TERMS), ("direction", DIRECTIONS),
                             ("mask_start", MASK_STARTS)):
            _check(getattr(self, name) in (None, *values),
                   f"{name} must be None or one of {values}, got {getattr(self, name)!r}")
        _check(self.pyramid_index in (None, *FIDELITIES),
               f"pyramid_index must be None, 'code' or 'paper', got {self.pyramid_index!r}")
        _check(self.transforms in (None, *TRANSFORM_SETS),
               f"transforms must be None or one of {TRANSFORM_SETS}, got {self.transforms!r}")
        _check(self.compute_dtype in COMPUTE_DTYPES,
               f"compute_dtype must be one of {COMPUTE_DTYPES}, got {self.compute_dtype!r}")
        _check(not (self.alpha and self.has_mask),
               f"alpha is for plain feature visualizations (perturbation 'none'), not {self.perturbation!r}: "
               "the method's mask is its own alpha")
        _check(self.parameterization in PARAMETERIZATIONS,
               f"parameterization must be one of {PARAMETERIZATIONS}, got {self.parameterization!r}")
        _check(self.blur_kernel in ("symmetric", "code"),
               f"blur_kernel must be 'symmetric' or 'code', got {self.blur_kernel!r}")

    # ---- values that follow `fidelity` unless set -------------------------------------------------
    @property
    def has_mask(self) -> bool:
        return self.perturbation != "none"

    @property
    def code_like(self) -> str:
        """"code" or "paper": which of the two the constants not generalized by the default follow."""
        return "paper" if self.fidelity == "paper" else "code"

    def _generalized(self, value, default, code):
        """A field that follows fidelity when None: `default` on the default, `code` otherwise."""
        return value if value is not None else (default if self.fidelity == "default" else code)

    @property
    def balance_mode(self) -> str:
        return self._generalized(self.balance, "relative", "code")

    @property
    def area_mode(self) -> str:
        return self._generalized(self.area_term, "visible", "code")

    @property
    def direction_mode(self) -> str:
        return self._generalized(self.direction, "signed", "positive")

    @property
    def mask_spectrum_decay(self) -> float:
        return self._generalized(self.mask_decay_power, MASK_DECAY_POWER, self.decay_power)

    @property
    def mask_start_mode(self) -> str:
        return self._generalized(self.mask_start, "beta", "half")

    @property
    def background(self) -> float:
        """The background gray as used: `background_gray`, or 0.55 (code, default) / 0.5 (paper)."""
        if self.background_gray is not None:
            return self.background_gray
        return CODE_GRAY if self.code_like == "code" else PAPER_GRAY

    @property
    def constant(self) -> float | None:
        """Deprecated spelling of `background_gray`."""
        from attrvis_jax._deprecated import warn

        warn("RenderConfig.constant", "RenderConfig.background_gray")
        return self.background_gray

    @property
    def growth(self) -> float:
        return self.lambda_growth if self.lambda_growth is not None else (1.23 if self.code_like == "code" else 1.2)

    @property
    def schedule_steps(self) -> int:
        return self.decay_steps if self.decay_steps is not None else max(1, self.steps // 10)

    @property
    def pyramid_index_scale(self) -> float:
        """u = scale·M picks the pyramid level; code 7 (num_levels = 8 on 6 levels), paper 5."""
        return 7.0 if (self.pyramid_index or self.code_like) == "code" else 5.0

    @property
    def transform_set(self) -> str:
        return self.transforms or self.code_like



def scaled_lr(steps: int) -> float:
    """The paper's lr for a run of `steps` updates: lr·√(2048/steps) of the default RenderConfig,
    0.02 at 2048 and 0.08 at 128 (the reduced schedule's rule; `configs.reduced` says why)."""
    paper = RenderConfig()
    return paper.lr * math.sqrt(paper.steps / steps)


@dataclasses.dataclass(frozen=True)
class RunOptions(_ConfigMethods):
    """How a render runs, apart from what it computes (`RenderConfig`): seed i's result is the same
    whichever other seeds run beside it, whether the steps are chunked or looped, and whatever
    snapshots are kept, so none of these is part of a sweep's settings.

    seeds: independent initializations (and noise streams), one batched axis (`visualize` runs
    seeds 0..seeds-1 unless given seed ids); snapshot_steps: keep the images after these many
    updates too; chunk_size: updates per compiled call (progress and snapshots happen between
    calls); engine: "scan" (lax.scan over each chunk) or "loop" (a Python loop of jitted steps,
    faster to compile, the same arithmetic); seed_batch: how many seeds (per device) the network
    sees at once inside a step, the step's seeds running in groups of that many one after another
    (a seed's picture is the same bits in any group of the same size, the seed alone in a group of
    one; between group sizes the batched network may round differently, as any two batch sizes
    do); None chooses per backend and network (`render.optimize.auto_seed_batch`: on a CPU the
    groups whose activations stay small, one seed for full-size images; elsewhere all seeds at
    once). It changes no result beyond that rounding, so like the others it is not a sweep setting."""

    seeds: int = 25
    snapshot_steps: tuple[int, ...] = (128,)
    chunk_size: int = 32
    engine: str = "scan"
    seed_batch: int | None = None

    def __post_init__(self):
        _check_types(self)
        object.__setattr__(self, "snapshot_steps", tuple(sorted({int(s) for s in self.snapshot_steps})))
        _check(self.engine in RENDER_ENGINES, f"engine must be one of {RENDER_ENGINES}, got {self.engine!r}")


RUN_FIELDS = tuple(f.name for f in dataclasses.fields(RunOptions))


def split_options(config: RenderConfig | None, options: RunOptions | None, overrides: dict
                  ) -> tuple[RenderConfig, RunOptions]:
    """`config` and `options` with `overrides` applied to whichever of the two has each field
    (`visualize(..., steps=256, seeds=2)`); an unknown name is a clear error."""
    config = config or RenderConfig()
    options = options or RunOptions()
    overrides = current_fields(RenderConfig, overrides, "visualize")
    known = RUN_FIELDS + tuple(f.name for f in dataclasses.fields(RenderConfig))
    bad = sorted(set(overrides) - set(known))
    _check(not bad, f"unknown RenderConfig or RunOptions field(s) {bad}; valid: {sorted(known)}")
    run = {k: v for k, v in overrides.items() if k in RUN_FIELDS}
    algorithm = {k: v for k, v in overrides.items() if k not in RUN_FIELDS}
    return (config.replace(**algorithm) if algorithm else config), (options.replace(**run) if run else options)


# ---- sweeps (docs/sweeps.md: batched, sharded, resumable) -----------------------------------------
@dataclasses.dataclass(frozen=True)
class SweepConfig(_ConfigMethods):
    """A sweep: images × targets × layers × perturbations × seeds, each item one visualization.

    images: source specs (files, folders, `sample:NAME`, `tfds:NAME:SPLIT@A:B`; see apps/sources.py).
    targets: class names or indices, `top1` (each image's top class) or `label` (the source's label).
    batch: visualizations per compiled batch (rounded up to a multiple of the device count); the
    batch axis is sharded over every device. attribution / render: the stage configs; the render
    config's `perturbation` is replaced by each of the sweep's. chunk_size / engine: how each batch
    runs (`RunOptions`); they may change between a sweep and its resumption.
    judge: a second network (a model name or factory) that classifies every picture (`attrvis_jax.judge`);
    an evaluation, not a render setting: it may be added or changed when a sweep resumes, and the
    stored items it has not judged are judged then, from their saved pictures.
    groups: render each item with its attribution's channel groups (that many, from views of the
    item's image; `attrvis_jax.groups`) in one batch with the whole.
    """

    model: str = "efficientnet_lite0"
    weights: str = "default"
    images: tuple[str, ...] = ("sample:chelsea",)
    targets: tuple[str, ...] = ("top1",)
    layers: tuple[str, ...] = ("default",)
    perturbations: tuple[str, ...] = ("pyramid",)
    seeds: int = 25
    method: str = "aumann_shapley"
    key: int = 0
    batch: int = 8
    limit: int | None = None  # at most this many images from the sources
    save_images: bool = True
    chunk_size: int = 32  # RunOptions.chunk_size of every batch
    engine: str = "scan"  # RunOptions.engine: "loop" compiles faster, computes the same
    judge: str | None = None  # a second network's verdict on every picture (an evaluation: not pinned)
    groups: int | None = None  # channel groups rendered beside the whole (a render setting: pinned)
    attribution: AttributionConfig = AttributionConfig()
    render: RenderConfig = RenderConfig()

    def __post_init__(self):
        for name in ("images", "targets", "layers", "perturbations"):
            value = getattr(self, name)
            # one entry or a list of them; targets may be class indices
            entry = (lambda v: isinstance(v, str) or _is_int(v)) if name == "targets" else (lambda v: isinstance(v, str))
            _check(entry(value) or (isinstance(value, (list, tuple)) and all(map(entry, value))),
                   f"{name} must be a string or a list of strings{' or class indices' if name == 'targets' else ''}, "
                   f"got {_shown(value)}")
            value = (str(value),) if entry(value) else tuple(str(v) for v in value)
            _check(len(value) > 0, f"the sweep needs at least one entry in {name}")
            object.__setattr__(self, name, value)
        _check_types(self, skip=("images", "targets", "layers", "perturbations"))
        names = tuple(RenderConfig(perturbation=p).perturbation for p in self.perturbations)
        _check(len(set(names)) == len(names), f"perturbations repeat: {list(self.perturbations)}")
        object.__setattr__(self, "perturbations", names)
        _check(len(set(self.layers)) == len(self.layers), f"layers repeat: {list(self.layers)}")
        RunOptions(chunk_size=self.chunk_size, engine=self.engine)  # checks them
        if isinstance(self.attribution, dict):
            object.__setattr__(self, "attribution", AttributionConfig.from_dict(self.attribution))
        if isinstance(self.render, dict):
            object.__setattr__(self, "render", RenderConfig.from_dict(self.render))
        _check(isinstance(self.attribution, AttributionConfig), "attribution must be an AttributionConfig or a dict")
        _check(isinstance(self.render, RenderConfig), "render must be a RenderConfig or a dict")

    @property
    def run_options(self) -> RunOptions:
        """How each batch runs: one seed per row (the items are the rows), no snapshots."""
        return RunOptions(seeds=1, snapshot_steps=(), chunk_size=self.chunk_size, engine=self.engine)

    @classmethod
    def from_dict(cls, d: dict):
        """From a parsed spec file: unknown keys are an error here (a typo would silently change a
        long sweep), and the stage configs' fields are checked by their own classes."""
        fields = {f.name for f in dataclasses.fields(cls)}
        bad = sorted(set(d) - fields)
        _check(not bad, f"unknown sweep field(s) {bad}; valid: {sorted(fields)}")
        d = dict(d)
        for name, stage in (("attribution", AttributionConfig), ("render", RenderConfig)):
            if name in d:
                _check(isinstance(d[name], dict), f"{name} must be a table of {stage.__name__} fields, "
                       f"got {_shown(d[name])}")
                stage_fields = {f.name for f in dataclasses.fields(stage)}
                moved = sorted(set(d[name]) & set(RUN_FIELDS)) if stage is RenderConfig else []
                _check(not moved, f"{', '.join(moved)} moved out of [{name}]: how a sweep runs, not what it "
                       "computes, is a top-level sweep field now (seeds, chunk_size, engine; a sweep keeps "
                       "no snapshots)")
                renamed = RENAMED_FIELDS.get(stage.__name__, {})
                wrong = sorted(set(d[name]) - stage_fields - set(renamed))
                _check(not wrong, f"unknown {name} field(s) {wrong}; valid: {sorted(stage_fields)}")
                for old in sorted(set(d[name]) & set(renamed)):
                    _deprecated.warn(f"the [{name}] field {old!r}", repr(renamed[old]))
                d[name] = current_fields(stage, d[name])
                try:
                    d[name] = stage.from_dict(d[name])
                except AttrvisError as e:  # name the section: steps exist in both
                    raise AttrvisError(f"[{name}] {e}") from None
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()})


# ---- catalogs of a layer (apps/catalog.py) -------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class CatalogConfig(_ConfigMethods):
    """A catalog of a layer (`apps.catalog`): every channel's plain feature visualization.

    layer; channels (None: all of the layer's); seeds per channel; key; batch: channels per
    compiled batch (rounded up to a multiple of the device count); render: the RenderConfig, its
    perturbation "none" (feature visualizations have no mask); by default 256 steps at the paper's
    lr scaled to them (0.02·√(2048/256), as the figures' presets scale it) with 16 redirected-ReLU
    steps, so that channels dead on the random start get a picture too."""

    layer: str = "default"
    channels: tuple[int, ...] | None = None
    seeds: int = 1
    key: int = 0
    batch: int = 8
    render: RenderConfig = RenderConfig(perturbation="none", steps=256, lr=scaled_lr(256), relu_redirect_steps=16)

    def __post_init__(self):
        if isinstance(self.channels, list):
            object.__setattr__(self, "channels", tuple(self.channels))
        _check_types(self, skip=("render",))
        _check(self.channels is None or len(self.channels) > 0, "channels must be None (all) or a non-empty list")
        _check(self.channels is None or len(set(self.channels)) == len(self.channels),
               f"channels repeat: {self.channels}")
        _check(isinstance(self.render, RenderConfig) and not self.render.has_mask,
               "a catalog renders plain feature visualizations: render.perturbation must be 'none'")
