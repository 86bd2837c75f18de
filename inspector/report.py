"""One self-contained HTML page about a model: header, layer table, audit summary, every conv layer's
filters and feature maps for one image.

The page makes no network request: pictures are embedded as ``data:`` PNGs, the CSS is inline, there
is no script, and a Content-Security-Policy forbids fetching anything else. Every string that comes
from the model file (layer names, metadata) is HTML-escaped: model files come from anywhere.

``build_report`` computes (one onnxruntime run for every layer's maps, the audit) and renders;
``render_html`` only renders, from arrays and the audit's dictionary.
"""

from __future__ import annotations

import base64
import html
import io
import math
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np

from . import metadata as md

# Nothing may be fetched: images are data: URIs, the style is inline, no script runs.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
# Beyond this many layer sections, they start closed so the page opens short.
OPEN_SECTIONS_UP_TO = 20
# Tile sizes as in the CLI's PNGs (render.save_filters_png / save_maps_png).
FILTER_TILES = (48, 96)
MAP_TILES = (64, 112)


@dataclass
class Report:
    html: str
    provider: str
    layers_drawn: int
    audit: dict


def build_report(model, image: str | os.PathLike, *, layers: Sequence | None = None, preprocess=None,
                 size: tuple[int, int] | None = None, device: str = "auto", max_tiles: int = 64,
                 cmap: str = "viridis", verbose: bool = False, quiet: bool = True,
                 on_provider: Callable[[str], None] | None = None) -> Report:
    """Run the model once on ``image`` with every conv layer's output added, audit it, render the page.

    ``layers``: the layers that get a section with pictures (default all); the table and the
    audit always cover every conv layer.
    """
    from .progress import progress
    from .render import colormap_lut

    all_layers = model.require_layers()
    shown = list(all_layers) if layers is None else list(layers)
    colormap_lut(cmap)  # an unknown colour map fails before any work
    feeding = model.feeding(preprocess, size, [image], image)
    spec, source, input_size = feeding.preprocess, feeding.preprocess_source, feeding.size
    batch = model.image_batch([image], spec, input_size)
    # The maps to draw, and the audit's own per-channel figures from the same run (ingraph.py), so the
    # page's numbers are the audit command's; abs sums for every layer (one image: nothing to save).
    from .audit.ingraph import statistics_session

    session = statistics_session(model, all_layers, {layer.name for layer in all_layers}, device, verbose,
                                 maps_too=True)
    if on_provider is not None:
        on_provider(session.provider)
    figures, batch_maps = session.run(batch)
    maps = {name: value[0] for name, value in batch_maps.items()}
    audit = audit_maps(model, maps, spec=spec, input_size=input_size, provider=session.provider,
                       preprocess_source=source, figures=figures)
    from .cam.html import attribution_section

    attribution = attribution_section(model, image, preprocess=spec, size=size, device=device, verbose=verbose)
    page = render_html(model, shown, maps, audit, image_name=os.path.basename(os.fspath(image)),
                       attribution=attribution,
                       spec=spec, input_size=input_size, provider=session.provider, max_tiles=max_tiles,
                       cmap=cmap, progress=lambda items: progress(items, total=len(shown), desc="report",
                                                                  unit="layer", quiet=quiet))
    return Report(page, session.provider, len(shown), audit)


def audit_maps(model, maps: dict[str, np.ndarray], *, spec, input_size, provider: str = "",
               preprocess_source: str | None = None, figures: dict | None = None) -> dict:
    """The audit's dictionary (inspector.audit's schema) for one image, from maps already computed.

    The weight statistics come from ``audit`` itself (no images, so no run); the activation
    statistics are fed from ``figures`` (the per-channel reductions of the same run, ingraph.py) where
    given, else from ``maps``, rather than from a second onnxruntime run.
    """
    from .audit import audit

    figures = figures or {}
    result = audit(model, quiet=True)
    result.add_figures(figures, 1)  # one image (a fixed batch is filled with copies of it: inspector.inputs)
    result.add_maps({layer_audit.name: maps[layer_audit.name][None] for layer_audit in result.layers
                     if layer_audit.name not in figures})
    result.images = result.images_requested = 1
    result.batch, result.input_size, result.preprocess = 1, tuple(input_size), spec.mode
    result.preprocess_source = preprocess_source
    result.provider = provider or None
    return result.to_dict()


# ------------------------------------------------------------------------------------------ rendering

def render_html(model, layers: Sequence, maps: dict[str, np.ndarray], audit: dict, *, image_name: str,
                spec, input_size: tuple[int, int], provider: str = "", max_tiles: int = 64,
                cmap: str = "viridis", progress: Callable[[Iterable], Iterable] = lambda items: items,
                attribution: str = "") -> str:
    """The whole page as a string. ``maps``: {layer name: (C, H, W)} for at least ``layers``.
    ``attribution``: the CAM section's HTML (``inspector.cam.html``), placed after the summary."""
    from . import __version__

    by_name = {entry.get("name"): entry for entry in audit.get("layers", [])}
    parts = [_head(model.name), "<body>", _header(model, image_name, spec, input_size, provider,
                     (audit.get("images") or {}).get("preprocess_source")),
             _contents(model, layers), '<main>', _summary(model, audit, by_name), attribution,
             _layer_table(model, maps, by_name, {layer.index for layer in layers},
                          (audit.get("summary") or {}).get("channels_judged") is not False)]
    open_attr = " open" if len(layers) <= OPEN_SECTIONS_UP_TO else ""
    parts.append('<section id="layers-drawn"><h2>Filters and feature maps</h2>')
    if not layers:
        parts.append("<p>No layer selected.</p>")
    for layer in progress(layers):
        parts.append(_layer_section(model, layer, maps.get(layer.name), by_name.get(layer.name, {}),
                                    image_name=image_name, preprocess=spec.mode, max_tiles=max_tiles,
                                    cmap=cmap, open_attr=open_attr))
    parts.append("</section></main>")
    parts.append(f'<footer>Made by inspector {_e(__version__)}. This file is self-contained: '
                 "it fetches nothing and runs no script.</footer></body></html>\n")
    return "\n".join(parts)


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _head(model_name: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>inspector report: {_e(model_name)}</title>
<style>{STYLE}</style>
</head>"""


STYLE = """
:root { color-scheme: light; --ink: #1e1e1e; --muted: #6e6e6e; --line: #ddd; --warn: #b91c1c; --bad: #fde8e8; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1280px; padding: 0 1.5rem 3rem; font: 15px/1.45 system-ui, -apple-system,
       "Segoe UI", Roboto, Helvetica, Arial, sans-serif; color: var(--ink); background: #fafafa; }
header { padding: 1.2rem 0 0.6rem; border-bottom: 1px solid var(--line); }
h1 { margin: 0 0 0.4rem; font-size: 1.6rem; overflow-wrap: anywhere; }
h2 { margin: 2rem 0 0.6rem; font-size: 1.25rem; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 0.15rem 1rem; margin: 0.4rem 0; }
dl.facts dt { color: var(--muted); }
dl.facts dd { margin: 0; overflow-wrap: anywhere; }
details dl.facts { grid-template-columns: repeat(auto-fill, minmax(7rem, max-content) minmax(9rem, 1fr)); }
.warning { margin: 0.8rem 0; padding: 0.6rem 0.9rem; border: 2px solid var(--warn); color: var(--warn);
           background: var(--bad); font-weight: 600; border-radius: 4px; }
nav { margin: 1rem 0; padding: 0.6rem 1rem; background: #fff; border: 1px solid var(--line); border-radius: 4px; }
nav ul { margin: 0.3rem 0; padding-left: 0; list-style: none; columns: 16rem auto; }
nav a { color: #1d4ed8; text-decoration: none; overflow-wrap: anywhere; }
nav a:hover { text-decoration: underline; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; background: #fff; font-variant-numeric: tabular-nums; }
th, td { padding: 0.25rem 0.6rem; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
th { position: sticky; top: 0; background: #f0f0f0; }
td.num { text-align: right; }
td.name { white-space: normal; overflow-wrap: anywhere; min-width: 8rem; max-width: 22rem; }
tr.dead td { background: var(--bad); }
dd.bad, strong.bad { color: var(--warn); font-weight: 600; }
details { margin: 0.8rem 0; background: #fff; border: 1px solid var(--line); border-radius: 4px; }
summary { cursor: pointer; padding: 0.5rem 0.8rem; font-weight: 600; overflow-wrap: anywhere; }
summary .meta { font-weight: 400; color: var(--muted); }
.body { padding: 0 0.8rem 0.8rem; }
.figures { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
figure { margin: 0; max-width: 100%; }
figcaption { color: var(--muted); font-size: 0.85rem; }
img { max-width: 100%; height: auto; display: block; }
.plot img { width: 100%; max-width: 1100px; }
footer { margin-top: 2rem; color: var(--muted); font-size: 0.85rem; }
"""


def _header(model, image_name: str, spec, input_size, provider: str, source: str | None = None) -> str:
    meta = model.metadata
    framework = meta.get(md.SOURCE_FRAMEWORK, "")
    source_version = meta.get(md.SOURCE_VERSION, "")
    if framework and source_version:
        framework = f"{framework} ({source_version})"
    prep = spec.mode + (f": {spec.description}" if spec.description else "")
    prep += (f" (colour order {spec.color_order}, scale {spec.scale:g}, mean "
             f"{', '.join(f'{v:g}' for v in spec.mean)}, std {', '.join(f'{v:g}' for v in spec.std)})")
    prep += {"metadata": "; from the model's metadata", "exporter": "; from the exporter's metadata",
             "flag": "; as given by --preprocess",
             "guessed": "; GUESSED: the file does not say; set it with --preprocess"}.get(source or "", "")
    facts = [
        ("model file", os.path.basename(model.path)),
        ("source framework", framework or "unknown (not converted by inspector)"),
        ("converter", meta.get(md.CONVERTER, "") or "unknown"),
        ("weights", meta.get(md.WEIGHTS_SOURCE, "") or ("random" if model.untrained else "unknown")),
        ("preprocessing", prep),
        ("input size", f"{input_size[0]}x{input_size[1]}, layout {model.input.layout}"),
        *([("classes", _class_summary(model.class_names))] if model.class_names else []),
        ("image", image_name),
        ("conv layers", str(len(model.layers))),
    ]
    if provider:
        facts.append(("ran on", provider))
    rows = "\n".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    warning = ""
    if model.untrained:
        warning = ('<p class="warning" id="untrained" role="alert">UNTRAINED MODEL: the converter says these '
                   "weights are random. The filters and feature maps below mean nothing about any real "
                   "task.</p>")
    return (f'<header><h1>{_e(model.name)}</h1>{warning}<dl class="facts">\n{rows}\n</dl></header>')


def _class_summary(names: list[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit]) + (", …" if len(names) > limit else "")
    return f"{len(names)}: {shown}"


def _contents(model, layers) -> str:
    items = "\n".join(f'<li><a href="#layer-{layer.index}">{layer.index} · {_e(layer.name)}</a></li>'
                      for layer in layers)
    return ('<nav aria-label="contents"><strong>Contents</strong>'
            '<p><a href="#summary">Audit summary</a> · <a href="#layer-table">Layer table</a></p>'
            f'<ul>\n{items}\n</ul></nav>')


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.{digits}g}"
    return str(value)


def _pct(value) -> str:
    if value is None:
        return "–"
    return f"{100 * float(value):.2f}%"


def _indices(values, limit: int = 12) -> str:
    values = list(values)
    head = ", ".join(str(v) for v in values[:limit])
    return head + (f", … ({len(values) - limit} more)" if len(values) > limit else "")


def _summary(model, audit: dict, by_name: dict) -> str:
    summary = audit.get("summary", {})
    images = audit.get("images", {})
    rows = []
    for key, value in summary.items():
        label = SUMMARY_LABELS.get(key, key.replace("_", " "))
        if key == "collapse_layer":
            klass = ' class="bad"' if value else ""
            text = _collapse_text(value)
            if not value and summary.get("channels_judged") is False:
                text = "not judged (too few images to tell whether the output changes between images)"
            rows.append(f'<dt>{_e(label)}</dt><dd data-key="{_e(key)}" data-value="{_e(_collapse_raw(value))}"'
                        f'{klass}>{_e(text)}</dd>')
            continue
        if isinstance(value, (dict, list)):
            continue
        shown = _pct(value) if key.endswith("fraction") and isinstance(value, (int, float)) else _fmt(value)
        rows.append(f'<dt>{_e(label)}</dt>'
                    f'<dd data-key="{_e(key)}" data-value="{_e(_raw(value))}">{_e(shown)}</dd>')
    notes = "".join(f'<p class="warning note">{_e(note)}</p>' for note in summary.get("notes") or [])
    if isinstance(images, dict) and "count" in images:
        rows.append(f'<dt>images audited</dt><dd data-key="images.count" data-value="{_e(images["count"])}">'
                    f'{_e(images["count"])}</dd>')
    evidence = summary.get("evidence")
    if isinstance(evidence, dict) and isinstance(evidence.get("fire_rate_upper_95"), (int, float)):
        text = (f"{evidence.get('images')} image(s): a unit silent on all of them may still fire on up to "
                f"{_pct(evidence['fire_rate_upper_95'])} of such images (95% bound); preprocessing "
                f"{evidence.get('preprocess_source') or 'unknown'}; {evidence.get('verification') or 'not verified'}")
        rows.append(f'<dt>evidence behind each channel verdict</dt><dd data-key="evidence.fire_rate_upper_95" '
                    f'data-value="{_e(_raw(evidence["fire_rate_upper_95"]))}">{_e(text)}</dd>')
    check = audit.get("verification")
    if isinstance(check, dict) and check.get("status") != "not run":
        rows.append(f'<dt>output change when the counted units are removed</dt><dd data-key='
                    f'"verification.output_change_counted" data-value="{_e(_raw(check.get("output_change_counted")))}">'
                    f'{_e(_pct(check.get("output_change_counted") or 0.0))} of the output range on '
                    f'{_e(check.get("images"))} held-out image(s)</dd>')
    plot = _summary_plot(audit)
    figure = ""
    if plot:
        figure = (f'<figure class="plot"><img src="data:image/png;base64,{plot[0]}" width="{plot[1]}" '
                  f'height="{plot[2]}" loading="lazy" decoding="async" alt="mean activation, dead '
                  'fraction and zero fraction by layer depth"><figcaption>Left: mean and max activation by '
                  "depth (one image). Right: dead fraction (dead filters plus dead channels, over the layer's "
                  "filters) and the fraction of zero activations.</figcaption></figure>")
    return (f'<section id="summary"><h2>Audit summary</h2>{notes}<dl class="facts">\n{"".join(rows)}\n</dl>'
            f"{figure}</section>")


SUMMARY_LABELS = {
    "layers": "conv layers",
    "filters": "filters",
    "dead_filters": "dead filters (by weights)",
    "dead_channels": "channels that do not respond on the image(s)",
    "constant_channels": "of which constant",
    "dormant_channels": "of which dormant",
    "channels_judged": "enough images to judge channels",
    "dead_units": "dead in all (each filter once)",
    "not_confirmed_channels": "silent, not confirmed by the verification (not counted)",
    "verified_dead_units": "verified dead units (what --fail-on-dead counts)",
    "verified_dead_fraction": "verified dead fraction",
    "dead_fraction": "dead fraction",
    "near_duplicate_pairs": "near-duplicate filter pairs",
    "collapse_layer": "activations collapse at",
}


def _collapse_text(collapse) -> str:
    if not collapse:
        return "no layer (activations do not collapse with depth)"
    if isinstance(collapse, dict):
        text = f"layer {collapse.get('index', '?')} {collapse.get('name', '')}"
        return text + (f": {collapse['reason']}" if collapse.get("reason") else "")
    return str(collapse)


def _collapse_raw(collapse) -> str:
    if isinstance(collapse, dict):
        return str(collapse.get("index", ""))
    return "" if collapse is None else str(collapse)


def _raw(value) -> str:
    return repr(value) if isinstance(value, float) else ("" if value is None else str(value))


def _dead_counts(entry: dict, filters: int) -> tuple[int, int | None, float | None]:
    dead_filters = set(entry.get("dead_filters") or [])
    channels = entry.get("dead_channels")
    dead_channels = None if channels is None else len(channels)
    dead = dead_filters | set(channels or [])
    fraction = len(dead) / filters if filters else None
    return len(dead_filters), dead_channels, fraction


COLLAPSE_MARK = ' <strong class="bad">collapse</strong>'


def _layer_table(model, maps: dict, by_name: dict, drawn: set[int], judged: bool = True) -> str:
    head = ("<tr><th>#</th><th>name</th><th>op</th><th>weights</th><th>groups</th><th>params</th>"
            "<th>output</th><th>dead filters</th><th>dead channels</th><th>zero fraction</th>"
            "<th>mean activation</th></tr>")
    rows = []
    for layer in model.layers:
        entry = by_name.get(layer.name, {})
        array = maps.get(layer.name)
        output = "x".join(map(str, array.shape)) if array is not None else "–"
        dead_filters = entry.get("dead_filters") or []
        dead_channels = entry.get("dead_channels")
        klass = ' class="dead"' if dead_filters or (judged and dead_channels) else ""
        channels_text = "–" if dead_channels is None else str(len(dead_channels))
        if dead_channels and not judged:
            channels_text += " (silent, not judged)"
        rows.append(
            f'<tr{klass} data-layer="{_e(layer.name)}">'
            f'<td class="num">{layer.index}</td>'
            f'<td class="name">{_link(layer, drawn)}'
            f'{COLLAPSE_MARK if entry.get("collapse") else ""}</td>'
            f"<td>{_e(layer.op + ('/' + layer.activation if layer.activation else ''))}</td>"
            f'<td>{_e("x".join(map(str, layer.weight_shape)))}</td>'
            f'<td class="num">{layer.groups}</td><td class="num">{layer.params:,}</td>'
            f"<td>{_e(output)}</td>"
            f'<td class="num" title="{_e(_indices(dead_filters, 64))}">{len(dead_filters)}</td>'
            f'<td class="num" title="{_e(_indices(dead_channels or [], 64))}">{_e(channels_text)}</td>'
            f'<td class="num" data-value="{_e(_raw(entry.get("zero_fraction")))}">'
            f'{_e(_pct(entry.get("zero_fraction")))}</td>'
            f'<td class="num" data-value="{_e(_raw(entry.get("mean_activation")))}">'
            f'{_e(_fmt(entry.get("mean_activation")))}</td></tr>')
    return (f'<section id="layer-table"><h2>Layers</h2><div class="scroll"><table>\n<thead>{head}</thead>\n'
            f'<tbody>\n{chr(10).join(rows)}\n</tbody></table></div></section>')


def _link(layer, drawn: set[int]) -> str:
    if layer.index in drawn:
        return f'<a href="#layer-{layer.index}">{_e(layer.name)}</a>'
    return _e(layer.name)


def _png_b64(image) -> tuple[str, int, int]:
    from .render import png_bytes

    # Unfiltered rows at zlib level 1: for these grids smaller than Pillow's level 6, and about 3x faster.
    return base64.b64encode(png_bytes(np.asarray(image))).decode("ascii"), image.size[0], image.size[1]


def _img(png: tuple[str, int, int], alt: str) -> str:
    data, width, height = png
    return (f'<img src="data:image/png;base64,{data}" width="{width}" height="{height}" loading="lazy" '
            f'decoding="async" alt="{_e(alt)}">')


def _layer_section(model, layer, layer_maps, entry: dict, *, image_name: str, preprocess: str,
                   max_tiles: int, cmap: str, open_attr: str) -> str:
    from .render import filter_grid, map_grid

    spec = md.json_value(model.metadata, md.PREPROCESS) or {}
    bgr = isinstance(spec, dict) and str(spec.get("color_order", "RGB")).upper() == "BGR"
    weights = model.filters(layer)
    filters_png = _png_b64(filter_grid(weights, layer, model.name, cmap=cmap, max_filters=max_tiles, bgr=bgr,
                                       untrained=model.untrained).to_image(*FILTER_TILES))
    figures = [f"<figure>{_img(filters_png, f'filters of {layer.name}')}<figcaption>Filters "
               f"({min(max_tiles, weights.shape[0])} of {weights.shape[0]}), colours scaled over the layer."
               "</figcaption></figure>"]
    if layer_maps is not None:
        maps_png = _png_b64(map_grid(layer_maps, layer, model.name, image_name=image_name, preprocess=preprocess,
                                     cmap=cmap, max_maps=max_tiles, untrained=model.untrained)
                            .to_image(*MAP_TILES))
        figures.append(f"<figure>{_img(maps_png, f'feature maps of {layer.name}')}<figcaption>Feature maps "
                       f"({min(max_tiles, layer_maps.shape[0])} of {layer_maps.shape[0]}) for "
                       f"{_e(image_name)}, colours scaled per map.</figcaption></figure>")
    dead_filters = entry.get("dead_filters") or []
    dead_channels = entry.get("dead_channels")
    facts = [("weights", "x".join(map(str, layer.weight_shape))), ("params", f"{layer.params:,}"),
             ("output tensor", layer.output),
             ("dead filters", f"{len(dead_filters)}" + (f" ({_indices(dead_filters)})" if dead_filters else "")),
             ("dead channels", "–" if dead_channels is None else
              f"{len(dead_channels)}" + (f" ({_indices(dead_channels)})" if dead_channels else "")),
             ("zero fraction", _pct(entry.get("zero_fraction"))),
             ("mean activation", _fmt(entry.get("mean_activation"))),
             ("max activation", _fmt(entry.get("max_activation")))]
    facts_html = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in facts)
    meta = f"{layer.op}{'/' + layer.activation if layer.activation else ''} · " + "x".join(map(str, layer.weight_shape))
    if dead_filters or dead_channels:
        meta += f" · {len(dead_filters)} dead filters, {len(dead_channels or [])} dead channels"
    return (f'<details id="layer-{layer.index}" class="layer"{open_attr}><summary>{layer.index} · '
            f'{_e(layer.name)} <span class="meta">{_e(meta)}</span></summary><div class="body">'
            f'<dl class="facts">{facts_html}</dl><div class="figures">{"".join(figures)}</div></div></details>')


def add_section(page: str, section: str, anchor: str, title: str) -> str:
    """``page`` with a section built elsewhere (e.g. ``inspector.compare.html``) at the end of <main>, and a
    link to it in the contents. ``section`` must already be escaped HTML."""
    link = f' · <a href="#{_e(anchor)}">{_e(title)}</a></p>'
    page = page.replace('<a href="#layer-table">Layer table</a></p>', '<a href="#layer-table">Layer table</a>' + link, 1)
    head, found, tail = page.rpartition("</main>")
    return head + section + found + tail if found else page


# ------------------------------------------------------------------------------------------- the plot

def _summary_plot(audit: dict) -> tuple[str, int, int] | None:
    """Activation and dead/zero fraction by depth, drawn with matplotlib (Agg), as base64 PNG."""
    entries = [e for e in audit.get("layers", []) if isinstance(e, dict)]
    if not entries:
        return None
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    depth = np.arange(len(entries))
    names = [_short(str(e.get("name", i))) for i, e in enumerate(entries)]

    def series(key):
        return np.array([np.nan if e.get(key) is None else float(e[key]) for e in entries])

    def fraction(entry, judged: bool):
        """Dead filters plus the channels of a layer whose channels were (judged) or were not judged."""
        filters = entry.get("filters")
        if not filters:
            return np.nan
        was_judged = entry.get("channels_judged") is not False
        channels = set(entry.get("dead_channels") or []) if was_judged == judged else set()
        if not judged and not channels:
            return np.nan
        return len(set(entry.get("dead_filters") or []) | channels) / int(filters)

    # The dead fraction plotted is the one the headline and the gate use; channels silent on too few
    # images to be judged get their own, fainter line, so a spike there is not read as death.
    dead = np.array([fraction(e, True) for e in entries], dtype=float)
    silent = np.array([fraction(e, False) for e in entries], dtype=float)
    figure = Figure(figsize=(11, 3.8), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    left.plot(depth, series("mean_activation"), "o-", label="mean activation")
    if any(e.get("max_activation") is not None for e in entries):
        left.plot(depth, series("max_activation"), "s--", alpha=0.6, label="max activation")
    left.set_title("activation by depth")
    # Max activations of late layers can be 1000x the early means: a log scale keeps both
    # readable, linear near zero because means of signed layers can be negative.
    left.set_yscale("symlog", linthresh=1e-2)
    right.plot(depth, dead, "o-", color="#b91c1c", label="dead fraction")
    if not np.all(np.isnan(silent)):
        right.plot(depth, silent, "^", color="#f59e0b", alpha=0.7, label="silent, too few images to judge")
    right.plot(depth, series("zero_fraction"), "s--", color="#555", label="zero fraction")
    right.set_ylim(-0.03, 1.03)
    right.set_title("dead and zero fraction by depth")
    collapse = audit.get("summary", {}).get("collapse_layer")
    for axes in (left, right):
        if len(entries) <= 24:
            axes.set_xticks(depth)
            # Layer names come from the model file: never parse them as mathtext.
            axes.set_xticklabels(names, rotation=60, ha="right", fontsize=7, parse_math=False)
        else:  # too many names to read: layer indices, as in the layer table
            axes.set_xlabel("layer index")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8, loc="best")
        if collapse is not None:
            where = _collapse_position(collapse, entries)
            if where is not None:
                axes.axvline(where, color="#b91c1c", alpha=0.4, linestyle=":")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    width, height = (int(v) for v in figure.canvas.get_width_height())
    return base64.b64encode(buffer.getvalue()).decode("ascii"), width, height


def _collapse_position(collapse, entries) -> int | None:
    if isinstance(collapse, dict):
        collapse = collapse.get("index", collapse.get("name"))
    for position, entry in enumerate(entries):
        if collapse in (entry.get("name"), entry.get("index")):
            return position
    return None


def _short(name: str, limit: int = 22) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"
