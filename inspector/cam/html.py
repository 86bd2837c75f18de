"""The report's attribution section: where the model looks for its top class, on the report's photo.

AblationCAM: it runs only the part of the graph after the target layer, so the section costs little.
Where the graph cannot be cut there, the section says why instead (ScoreCAM, one run of the whole model
per channel, is too slow to start unasked). Only for models with a class output.
"""

from __future__ import annotations

import html

from ..errors import InspectorError


def attribution_section(model, image, *, preprocess=None, size=None, device: str = "auto",
                        verbose: bool = False) -> str:
    """An HTML ``<section id="attribution">``, or "" when the model has no class output."""
    from ..report import _img, _png_b64
    from .pipeline import compute
    from .targets import NoClassOutput

    try:
        result = compute(model, image, "ablationcam", target="top", preprocess=preprocess, size=size,
                         device=device, verbose=verbose, quiet=True)
    except NoClassOutput:
        return ""
    except InspectorError as exc:
        text = str(exc)
        # ScoreCAM would cost one run of the whole model per channel: too slow to start unasked.
        return (f'<section id="attribution"><h2>Attribution</h2><p>No class activation map in this report: '
                f"{html.escape(text)} (<code>inspector cam</code> draws one with any method).</p></section>")
    picture = _png_b64(result.to_image())
    e = lambda value: html.escape(str(value), quote=True)  # noqa: E731 - names come from the model file
    return (f'<section id="attribution"><h2>Attribution: where the model looks</h2>'
            f'<figure>{_img(picture, f"{result.method} for {result.target_label} at {result.layer}")}'
            f"<figcaption>{e(result.method)} at layer {e(result.layer)} for the top class, "
            f"{e(result.target_label)} (score {result.score:.4g}); left the photo as the model saw it, right the "
            "map over it, scaled to [0, 1]. <code>inspector cam</code> draws it for any class, layer or method."
            "</figcaption></figure></section>")
