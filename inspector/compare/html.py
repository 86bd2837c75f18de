"""The HTML report's section comparing the model with another (``inspector report MODEL IMAGE --compare OTHER``).

Built from a ``DiffResult`` over the report's one image; every name from either model file is
escaped, pictures are embedded PNGs (the report's Content-Security-Policy allows nothing else).
"""

from __future__ import annotations

import base64
import html
import io

from .pictures import picture_rows, side_by_side
from .run import DiffResult, _sqnr_text

SECTION_ID = "compare"
SECTION_TITLE = "Comparison with another model"


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _png(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=6)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _num(value, pattern: str) -> str:
    return "–" if value is None else pattern.format(value)


def compare_section(result: DiffResult, pictures: int = 2) -> str:
    """``<section id="compare">``: the per-layer table and the worst layers' maps side by side."""
    worst = result.worst_layer()
    first = result.first_below()
    rows = []
    for layer in result.layers:
        pair, weights = layer.pair, layer.weights or {}
        s = layer.stats if layer.compared else None
        sqnr = s.sqnr_db() if s else None
        klass = ' class="dead"' if first is layer or (sqnr is not None and sqnr < result.threshold_db) else ""
        rows.append(
            f'<tr{klass} data-layer="{_e(pair.a.name)}"><td class="num">{pair.a.index}</td>'
            f'<td class="name">{_e(pair.a.name)}</td><td class="name">{_e(pair.b.name)}</td><td>{_e(f"{pair.match} ({pair.confidence})")}</td>'
            f'<td class="num" data-value="{_e("" if sqnr is None else repr(sqnr))}">'
            f'{_e(_sqnr_text(sqnr, bool(s and s.exact)) if s else layer.note or "–")}</td>'
            f'<td class="num">{_e(_num(s.cosine() if s else None, "{:.6f}"))}</td>'
            f'<td class="num">{_e(_num(s.max_abs_error if s else None, "{:.3g}"))}</td>'
            f'<td class="num">{_e(_num(weights.get("relative") if weights.get("comparable") else None, "{:.2e}"))}</td>'
            "</tr>")
    head = ("<tr><th>#</th><th>layer (this model)</th><th>layer (other)</th><th>matched by</th><th>SQNR dB</th>"
            "<th>cosine</th><th>max abs error</th><th>weights: relative change</th></tr>")
    if worst is None and result.compared():
        verdict = "Every compared layer's maps are identical (SQNR infinite)."
    elif worst is not None:
        verdict = (f"Worst layer: {worst.pair.a.index} {_e(worst.pair.a.name)} at "
                   f"{_e(_sqnr_text(worst.sqnr(), False))} dB; "
                   + (f"first layer under {result.threshold_db:g} dB: {first.pair.a.index} {_e(first.pair.a.name)}."
                      if first else f"no layer under {result.threshold_db:g} dB."))
    else:
        verdict = "No layer could be compared on the image."
    figures = []
    for layer in result.worst_for_pictures(pictures):
        maps = result.first_maps.get(layer.pair.a.name)
        if maps is None:
            continue
        grid = side_by_side(maps[0], maps[1], picture_rows(layer.stats), layer_name=layer.pair.a.name,
                            name_a=result.name_a, name_b=result.name_b,
                            sqnr_text=_sqnr_text(layer.sqnr(), False))
        image = grid.to_image(96, 160)
        figures.append(f'<figure><img src="data:image/png;base64,{_png(image)}" width="{image.size[0]}" '
                       f'height="{image.size[1]}" loading="lazy" decoding="async" alt="maps of '
                       f'{_e(layer.pair.a.name)}: this model, the other, their difference"><figcaption>'
                       f"{_e(layer.pair.a.name)}: this model (A), the other (B) and |A-B|.</figcaption></figure>")
    unmatched = ""
    if result.unmatched_a or result.unmatched_b:
        unmatched = (f"<p>Not matched: {len(result.unmatched_a)} layer(s) of this model, "
                     f"{len(result.unmatched_b)} of the other.</p>")
    return (f'<section id="{SECTION_ID}"><h2>{SECTION_TITLE}</h2>'
            f'<dl class="facts"><dt>this model (A)</dt><dd>{_e(result.path_a)}</dd>'
            f'<dt>other model (B)</dt><dd>{_e(result.path_b)}</dd>'
            f'<dt>verdict</dt><dd data-key="compare.worst">{verdict}</dd></dl>'
            f"<p>SQNR = 10 log10(signal power of A / power of A-B) over the tensor each layer passes on, on "
            f"this one image; <code>inspector diff</code> streams it over a whole folder.</p>{unmatched}"
            f'<div class="scroll"><table><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table></div>'
            f'<div class="figures">{"".join(figures)}</div></section>')



def report_section(page: str, model, other_path: str, image, *, preprocess=None, size=None, device: str = "auto",
                   verbose: bool = False) -> str:
    """``page`` (the report's HTML) with the comparison of ``model`` and ``other_path`` on ``image`` added."""
    from ..report import add_section
    from .run import diff

    import os
    import sys

    def say(lines: list[str]) -> None:  # the report has said model A's already
        for line in lines:
            if os.path.basename(model.path) not in line or os.path.basename(model.path) == os.path.basename(other_path):
                print(line, file=sys.stderr)

    result = diff(model, other_path, [image], preprocess=preprocess, size=size, devices=[device],
                  keep_first=True, quiet=True, verbose=verbose, on_notes=say)
    return add_section(page, compare_section(result), SECTION_ID, SECTION_TITLE)
