"""Pictures and the HTML report: PNG writing, heat-map overlays, contact sheets, report.html.

Everything here takes plain arrays and dicts (no model, no JAX) and writes atomically. The report
is one self-contained HTML page that references PNGs in the same folder (relative paths), so the
folder can be zipped, mailed and opened offline.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Sequence

import numpy as np

from attrvis_jax.fileio import write_text
# Pictures and the PNG writer are the library's (attrvis_jax.pictures, .outputs); drivers take them from here.
from attrvis_jax.outputs import save_png  # noqa: F401  (the drivers' PNG writer)
from attrvis_jax.pictures import colorize, contact_sheet, heatmap_overlay, png_bytes, resize, to_uint8  # noqa: F401


# ---- the HTML report --------------------------------------------------------------------------
_CSS = """
:root { --fg:#1d2330; --muted:#667085; --line:#e4e7ec; --card:#f8f9fb; --accent:#c4320a; --good:#067647; }
* { box-sizing:border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif; color:var(--fg); background:#fff; }
main { max-width:1180px; margin:0 auto; padding:28px 24px 60px; }
h1 { font-size:26px; margin:0 0 4px; } h2 { font-size:18px; margin:34px 0 12px; }
.sub { color:var(--muted); margin:0 0 22px; }
.stats { display:grid; grid-template-columns:repeat(auto-fit,minmax(150px,1fr)); gap:12px; }
.stat { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:12px 14px; }
.stat .v { font-size:22px; font-weight:650; font-variant-numeric:tabular-nums; }
.stat .k { color:var(--muted); font-size:12.5px; text-transform:uppercase; letter-spacing:.04em; }
.row { display:grid; grid-template-columns:repeat(auto-fit,minmax(220px,1fr)); gap:16px; }
figure { margin:0; } figure img { width:100%; border-radius:8px; border:1px solid var(--line); image-rendering:auto; display:block; }
figcaption { color:var(--muted); font-size:13px; margin-top:6px; }
.seeds { display:grid; grid-template-columns:repeat(auto-fill,minmax(170px,1fr)); gap:14px; }
.seed { border:1px solid var(--line); border-radius:10px; padding:8px; background:#fff; }
.seed.best { border-color:var(--accent); box-shadow:0 0 0 2px #fee4e2; }
.seed .pair { display:grid; grid-template-columns:1fr 1fr; gap:4px; }
.seed img { width:100%; border-radius:6px; display:block; }
.seed .nums { font-size:12.5px; font-variant-numeric:tabular-nums; margin-top:6px; display:flex; justify-content:space-between; flex-wrap:wrap; gap:2px 8px; }
.hit { color:var(--good); font-weight:600; } .miss { color:var(--accent); font-weight:600; }
table { border-collapse:collapse; font-size:13.5px; } td { padding:3px 14px 3px 0; vertical-align:top; border-bottom:1px solid var(--line); }
td:first-child { color:var(--muted); white-space:nowrap; }
details { margin-top:10px; } summary { cursor:pointer; color:var(--muted); }
.note { color:var(--muted); font-size:13px; }
"""


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return str(v)
        return f"{v:.{digits}g}" if abs(v) < 1e-3 or abs(v) >= 1e4 else f"{v:.{digits}f}".rstrip("0").rstrip(".")
    return str(value)


def _table(rows: dict) -> str:
    body = "".join(
        f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows.items()
    )
    return f"<table>{body}</table>"


def _bars_svg(values: Sequence[float], best: int, width: int = 560, height: int = 120) -> str:
    """A tiny inline bar chart of per-seed PCC (no JavaScript, no external files)."""
    n = len(values)
    if n == 0:
        return ""
    width = min(width, 28 * n)  # a few seeds should not make slabs
    lo = min(0.0, min(values))
    hi = max(1e-9, max(values))
    bw = width / n
    zero = height * hi / (hi - lo)
    bars = []
    for i, v in enumerate(values):
        top = zero - height * max(v, 0) / (hi - lo)
        bottom = zero - height * min(v, 0) / (hi - lo)
        color = "#c4320a" if i == best else "#98a2b3"
        bars.append(f'<rect x="{i * bw + 1:.1f}" y="{top:.1f}" width="{max(bw - 2, 1):.1f}" '
                    f'height="{max(bottom - top, 0.5):.1f}" fill="{color}"><title>seed {i}: {v:.3f}</title></rect>')
    axis = f'<line x1="0" x2="{width}" y1="{zero:.1f}" y2="{zero:.1f}" stroke="#667085" stroke-width="1"/>'
    return (f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="PCC per seed">{"".join(bars)}{axis}</svg>')


def write_report(out_dir: Path, results: dict, seeds: Sequence[dict], figures: dict[str, str],
                 title: str | None = None) -> Path:
    """Write `report.html` in out_dir.

    results: the run's summary (as in results.json); seeds: one dict per seed with keys "image",
    "mask" (relative PNG paths), "pcc", "top5_hit", "mask_area", "final_loss"; figures: relative
    paths of "input", "heatmap", "contact_sheet".
    """
    out_dir = Path(out_dir)
    esc = html.escape
    # The agreement the objective optimizes: PCC with sign(a − b)·R⁺ (= PCC with R⁺ on post-ReLU
    # layers); the best seed is the one that agrees most, and PCC with R⁺ is shown beside it.
    pcc = [float(s.get("pcc_directed", s["pcc"])) for s in seeds]
    best = int(np.argmax(pcc)) if pcc else -1
    target = results.get("target", "")
    title = title or f"{target} — what {results.get('layer', '')} of {results.get('model', '')} sees"
    stats = [
        ("target class", f"{target} [{results.get('target_index', '')}]"),
        ("mean PCC (directed)", f"{np.mean(pcc):.3f} ± {np.std(pcc):.3f}" if pcc else "–"),
        ("mean PCC with R⁺", f"{np.mean([float(s['pcc']) for s in seeds]):.3f}" if seeds else "–"),
        ("top-5 consistency", f"{np.mean([bool(s['top5_hit']) for s in seeds]):.0%}" if seeds else "–"),
        ("β (target mask area)", _fmt(results.get("beta"))),
        ("mean mask area", _fmt(float(np.mean([s["mask_area"] for s in seeds]))) if seeds else "–"),
        ("completeness error", _fmt(results.get("completeness_error"))),
        ("seeds × steps", f"{len(seeds)} × {results.get('config', {}).get('render', {}).get('steps', '–')}"),
        ("wall time", f"{results.get('timings', {}).get('total_s', 0):.0f} s"),
    ]
    if "judge" in results:  # the second network's verdict beside the network's own
        stats[4:4] = [(f"judge top-5 ({results['judge']})", f"{np.mean(results['judge_top5']):.0%}"),
                      ("judge rank: photo · gray", f"{_fmt(results['judge_photo_rank'])} · {results['judge_gray_rank']:,}")]
    stat_html = "".join(
        f'<div class="stat"><div class="k">{esc(k)}</div><div class="v">{esc(str(v))}</div></div>' for k, v in stats
    )
    main_figs = [("heatmap", figures.get("heatmap"), "attribution heat map (mean over channels of R⁺)")]
    if seeds:  # the best seed leads, beside the heat map; the input follows
        main_figs += [
            ("best", seeds[best]["image"], f"best seed ({best}): PCC {pcc[best]:.3f}"
             + (f", target rank {seeds[best]['target_rank']}" if "target_rank" in seeds[best] else "")
             + (f", judge's rank {seeds[best]['judge_rank']}" if "judge_rank" in seeds[best] else "")),
            ("mask", seeds[best]["mask"], f"its mask M (area {seeds[best]['mask_area']:.3f})"),
        ]
    main_figs.append(("input", figures.get("input"), "the input, as the model sees it"))
    fig_html = "".join(
        f'<figure><img src="{esc(src)}" alt="{esc(name)}"><figcaption>{esc(cap)}</figcaption></figure>'
        for name, src, cap in main_figs if src
    )
    seed_html = "".join(
        f'<div class="seed{" best" if i == best else ""}"><div class="pair">'
        f'<img src="{esc(s["image"])}" alt="seed {i} visualization"><img src="{esc(s["mask"])}" alt="seed {i} mask"></div>'
        f'<div class="nums"><span>seed {i}</span><span>PCC {pcc[i]:.3f}</span>'
        f'<span class="{"hit" if s["top5_hit"] else "miss"}">{"top-5 ✓" if s["top5_hit"] else "top-5 ✗"}</span>'
        f'<span>area {float(s["mask_area"]):.3f}</span><span>loss {_fmt(float(s["final_loss"]))}</span>'
        + (f'<span class="{"hit" if s["judge_top5"] else "miss"}" title="{esc(str(results.get("judge")))} sees '
           f'{esc(str(s.get("judge_top1", "")))} first">judge #{s["judge_rank"]}</span>' if "judge_rank" in s else "")
        + '</div></div>'
        for i, s in enumerate(seeds)
    )
    summary_rows = {k: results[k] for k in ("model", "layer", "target", "target_index", "method", "beta",
                                            "lambda0", "completeness_error", "logit_a", "logit_b")
                    if k in results}
    timings = results.get("timings", {})
    versions = results.get("versions", {})
    import json

    config_json = esc(json.dumps(results.get("config", {}), indent=2, default=str))
    contact = figures.get("contact_sheet")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{esc(title)}</title><style>{_CSS}</style></head>
<body><main>
<h1>{esc(title)}</h1>
<p class="sub">Attribution visualization (Shi, Li, Yamaguchi 2023): an image X and a mask M optimized so that
the masked image excites layer <b>{esc(str(results.get('layer', '')))}</b> in proportion to each neuron's
contribution to <b>{esc(str(target))}</b>. Gray = masked out.</p>
<div class="stats">{stat_html}</div>
<h2>The attribution and the best visualization</h2>
<div class="row">{fig_html}</div>
<h2>Every seed</h2>
<p class="note">Each seed starts from another random image and draws other noise and transforms. PCC: Pearson
correlation between the layer's response to the visualization and the directed attribution sign(a − b)·R⁺
(each neuron the way it contributed; R⁺ itself on post-ReLU layers), over all neurons. Top-5: the
visualization alone is classified as the target within the top 5.</p>
{_bars_svg(pcc, best)}
<div class="seeds">{seed_html}</div>
{judge_section(results, seeds)}
{groups_section(results, seeds, figures)}
{f'<h2>Contact sheet</h2><figure style="max-width:{min(len(seeds), 6) * 240}px"><img src="{esc(contact)}" alt="contact sheet of all seeds"></figure>' if contact else ''}
<h2>Details</h2>
{_table(summary_rows)}
<details><summary>timings</summary>{_table({k: f"{v:.2f} s" if isinstance(v, float) else v for k, v in timings.items()})}</details>
<details><summary>versions</summary>{_table(versions)}</details>
<details><summary>full configuration</summary><pre>{config_json}</pre></details>
</main></body></html>
"""
    path = out_dir / "report.html"
    write_text(path, page)
    return path


def judge_section(results: dict, seeds: Sequence[dict]) -> str:
    """The second network's verdict on each picture, beside its verdict on the photo and on gray."""
    if "judge" not in results:
        return ""
    esc = html.escape
    judge, target = esc(str(results["judge"])), esc(str(results.get("target", "")))
    same = (" It is the network the pictures were made for: its verdict is the network's own, not a second "
            "opinion." if results.get("judge_same_model") else "")
    rows = "".join(
        f"<tr><td>seed {i}</td><td class=\"{'hit' if s['judge_top5'] else 'miss'}\">rank {s['judge_rank']}</td>"
        f"<td>its top class: {esc(str(s.get('judge_top1', '')))}</td><td>the network's own rank: "
        f"{s.get('target_rank', '–')}</td></tr>" for i, s in enumerate(seeds))
    photo = results.get("judge_photo_rank")
    rows += (f"<tr><td>the photo</td><td>rank {_fmt(photo)}</td><td colspan=2>the same class on the photo itself"
             "</td></tr>" if photo is not None else "")
    rows += (f"<tr><td>gray canvas</td><td>rank {results['judge_gray_rank']:,}</td><td colspan=2>a plain gray picture "
             "(the pictures' background): what no evidence scores</td></tr>")
    return (f"<h2>A second network's verdict</h2><p class=\"note\">{judge} classifies every picture through its "
            f"own preprocessing; rank 0 = it sees <b>{target}</b> first, below 5 = in its top 5. A network the "
            f"pictures were not optimized against cannot be fooled by them the way the network itself can.{same}</p>"
            f"<table>{rows}</table>")


def groups_section(results: dict, seeds: Sequence[dict], figures: dict, shown: int = 6) -> str:
    """The whole beside each channel group: heat map, the pictures of the first `shown` seeds, top
    channels and numbers."""
    record = results.get("groups")
    if not record:
        return ""
    esc = html.escape
    where = ("views of the photo (" + ", ".join(record["images"]) + ")" if record["source"] == "views"
             else f"{len(record['images'])} images of the class")
    header = (f"<h2>Channel groups</h2><p class=\"note\">The attribution split into {len(record['groups'])} groups "
              f"of channels that rise and fall together (factor analysis of the attributions of the class over the "
              f"photo and {esc(where)}; {record['n_factors']} factors), each rendered in the same batch as the whole. "
              f"Together they hold {record['r_plus_coverage']:.0%} of R⁺. Numbers: PCC with the group's own "
              "attribution, the network's rank of the class"
              + (", the judge's rank" if "judge" in results else "") + ".</p>")
    seeds = list(seeds)[:shown]
    seed_ids = list(range(len(seeds)))

    def cell(src, caption):
        return f'<figure><img src="{esc(src)}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'

    def numbers(pcc, rank, judge, i):
        return f"seed {i}: PCC {pcc:.3f}, rank {rank}" + (f", judge {judge}" if judge is not None else "")

    whole = [cell(figures.get("heatmap", "heatmap.png"), "the whole: every channel, 100% of R⁺")]
    whole += [cell(s["image"], numbers(float(s.get("pcc_directed", s["pcc"])), s.get("target_rank", "–"),
                                       s.get("judge_rank"), i)) for i, s in enumerate(seeds)]
    rows = [f'<div class="grouprow">{"".join(whole)}</div>']
    for g in record["groups"]:
        top = ", ".join(f"{t['channel']} ({t['share']:.0%})" for t in g["top_channels"])
        cells = [cell(g["heatmap"], f"group {g['group']}: {len(g['channels'])} channels, {g['share_of_r_plus']:.0%} "
                                    f"of R⁺; top: {top}")]
        cells += [cell(g["images"][i], numbers(g["pcc_directed"][i], g["target_rank"][i],
                                               g["judge_rank"][i] if "judge_rank" in g else None, i)) for i in seed_ids]
        rows.append(f'<div class="grouprow">{"".join(cells)}</div>')
    style = (f"<style>.grouprow {{ display:grid; grid-template-columns:repeat({1 + len(seeds)}, minmax(0, 220px)); "
             "gap:12px; margin-bottom:14px; }}</style>")
    return header + style + "".join(rows)
