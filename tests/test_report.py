"""`inspector report`: one self-contained HTML page, checked by parsing it, against the audit, and in headless Chromium."""

import base64
import contextlib
import html
import io
import json
import os
import re
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
from onnx import helper, numpy_helper
from PIL import Image

import builders as b
import inspector
from inspector import metadata as md
from inspector.audit import audit
from inspector.cli import main

HOSTILE = "<script>alert(1)</script>"
MATHTEXT = "odd$\\frac{a}{b}$^{name"  # would break matplotlib if parsed as mathtext
NAMES = (HOSTILE, "features.2", MATHTEXT)
DEAD = (2, 5)  # filters of layer 1 whose weights and bias are planted as zeros
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def cli(*args):
    """(exit code, stdout, stderr) of the real entry point, in-process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return code, out.getvalue(), err.getvalue()


def three_layers(untrained=True, names=NAMES, collapse=False):
    """Conv+Relu x3, NCHW 16x16; layers named by their Relu outputs (the conv nodes have no name),
    so the model file decides the names; filters DEAD of the second layer zeroed, bias included."""
    r = b.rng(3)
    shapes = [(8, 3), (8, 8), (6, 8)]
    nodes, inits, previous = [], [], "x"
    for i, ((c_out, c_in), name) in enumerate(zip(shapes, names)):
        w = (r.standard_normal((c_out, c_in, 3, 3)) * 0.4).astype(np.float32)
        bias = (np.abs(r.standard_normal(c_out)) * 0.1).astype(np.float32)
        if i == 1:
            w[list(DEAD)] = 0
            bias[list(DEAD)] = 0
        if i == 2 and collapse:  # every unit of the last layer silent: activations collapse there
            bias[:] = -1e3
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(bias, f"b{i}")]
        nodes += [helper.make_node("Conv", [previous, f"w{i}", f"b{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [name])]
        previous = name
    meta = {md.MODEL_NAME: "<b>m&m</b>", md.CONVERTER: '"><img src="http://example.com/x.png">',
            md.SOURCE_FRAMEWORK: "torch", md.WEIGHTS_TRAINED: "false" if untrained else "true"}
    return b.model(nodes, [b.image_input(shape=(1, 3, 16, 16))], [b.out(previous)], inits, metadata=meta)


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "photo.png"
    Image.fromarray(b.rng(5).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(path)
    return str(path)


@pytest.fixture
def model_path(save):
    return save(three_layers(), "tiny.onnx")


class Page(HTMLParser):
    """What a test needs from the page: images, links, ids, data-* values, table rows, script tags."""

    def __init__(self, text):
        super().__init__(convert_charrefs=True)
        self.images, self.hrefs, self.ids, self.scripts, self.csp = [], [], set(), 0, None
        self.values, self.rows, self.sections = {}, {}, []
        self.attribute_values = []
        self._row = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.attribute_values += [v for v in attrs.values() if v]
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            self.images.append(attrs)
        elif tag == "a" and "href" in attrs:
            self.hrefs.append(attrs["href"])
        elif tag == "script":
            self.scripts += 1
        elif tag == "meta" and attrs.get("http-equiv", "").lower() == "content-security-policy":
            self.csp = attrs.get("content")
        elif tag == "details":
            self.sections.append(attrs.get("id"))
        if "data-key" in attrs:
            self.values[attrs["data-key"]] = attrs.get("data-value")
        if tag == "tr" and "data-layer" in attrs:
            self._row = self.rows.setdefault(attrs["data-layer"], [])
        elif tag == "td" and self._row is not None and "data-value" in attrs:
            self._row.append(attrs["data-value"])

    def handle_endtag(self, tag):
        if tag == "tr":
            self._row = None


def decode_png(src):
    assert src.startswith("data:image/png;base64,"), src[:60]
    with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True))) as picture:
        picture.load()
        return picture.size


def report(model_path, image, tmp_path, *extra):
    out = tmp_path / "report.html"
    code, stdout, err = cli("report", model_path, image, "--preprocess", "raw", "--device", "cpu", "-o", out, *extra)
    assert code == 0, err
    assert str(out) in stdout and re.search(r"\d+(\.\d)? KB", stdout), stdout
    return out.read_text(encoding="utf-8"), stdout


# ------------------------------------------------------------------------------ the page itself

def test_page_is_self_contained_escaped_and_complete(model_path, image, tmp_path):
    text, stdout = report(model_path, image, tmp_path)
    page = Page(text)
    assert "3 of 3 layers drawn" in stdout
    # Untrusted strings are escaped everywhere; the page has no script at all.
    assert "<script" not in text.lower() and page.scripts == 0
    assert "<b>m&m</b>" not in text and html.escape("<b>m&m</b>") in text
    assert 'src="http://example.com' not in text
    for name in NAMES:
        assert html.escape(name) in text
    assert page.csp == CSP
    # Nothing to fetch: every picture is an embedded PNG that decodes to its stated size, every link an anchor.
    assert not [v for v in page.attribute_values if re.match(r"\s*(https?:|//|file:|ftp:)", v)]
    assert len(page.images) == 1 + 2 * len(NAMES)  # the summary plot, then filters and maps per layer
    for img in page.images:
        assert decode_png(img["src"]) == (int(img["width"]), int(img["height"]))
        assert img["loading"] == "lazy" and img["alt"]
    assert page.hrefs and all(h.startswith("#") and h[1:] in page.ids for h in page.hrefs)
    assert page.sections == [f"layer-{i}" for i in range(len(NAMES))]
    assert "UNTRAINED MODEL" in text and 'id="untrained"' in text
    assert "torch" in text  # the source framework from the metadata


def test_trained_model_has_no_untrained_warning(save, image, tmp_path):
    text, _ = report(save(three_layers(untrained=False)), image, tmp_path)
    assert "UNTRAINED" not in text


@pytest.mark.parametrize("collapse", [False, True])
def test_summary_and_table_equal_the_audit_and_numpy(save, image, tmp_path, collapse):
    model_path = save(three_layers(collapse=collapse))
    text, _ = report(model_path, image, tmp_path)
    page = Page(text)
    expected = audit(model_path, images=[image], preprocess="raw", device="cpu", quiet=True).to_dict()
    summary = expected["summary"]
    # The summary from what the model was built with: DEAD planted filters of 8 + 8 + 6, no channel judged.
    assert int(page.values["dead_filters"]) == summary["dead_filters"] == len(DEAD)
    assert int(page.values["dead_units"]) == summary["dead_units"] == len(DEAD)
    assert float(page.values["dead_fraction"]) == summary["dead_fraction"] == pytest.approx(len(DEAD) / 22)
    assert int(page.values["images.count"]) == expected["images"]["count"] == 1
    # One image is no evidence of death: the silent channels are shown, not judged, and the page says so.
    assert summary["collapse_layer"] is None and page.values["collapse_layer"] == ""
    assert summary["channels_judged"] is False
    assert "channel verdicts need at least 8 images" in text
    # Per layer, against an independent forward pass: Pillow's resize, onnx's own weight reader, NumPy's convs.
    import onnx

    with Image.open(image) as photo:
        x = np.asarray(photo.convert("RGB").resize((16, 16), Image.Resampling.BILINEAR), np.float64)
    x = (x / 255).transpose(2, 0, 1)[None]
    graph = onnx.load(model_path).graph
    weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    for i, name in enumerate(NAMES):
        x = b.relu(b.conv2d(x, weights[f"w{i}"], weights[f"b{i}"], pad=1))
        entry = next(layer for layer in expected["layers"] if layer["name"] == name)
        zero_fraction, mean_activation = (float(v) for v in page.rows[name])
        assert zero_fraction == entry["zero_fraction"] and mean_activation == entry["mean_activation"]
        assert zero_fraction == pytest.approx(float((x == 0).mean()), abs=0.01)
        assert mean_activation == pytest.approx(float(x.mean()), rel=1e-4)
        if collapse and i == 2:  # silent on the 1 image: counted as silent, not judged dead
            assert summary["dead_channels"] == len(DEAD) + 6 and float((x == 0).mean()) == 1.0
    dead_row = re.search(r'<tr class="dead" data-layer="features\.2">(.*?)</tr>', text).group(1)
    assert f'title="{DEAD[0]}, {DEAD[1]}">{len(DEAD)}</td>' in dead_row


def test_report_audit_from_one_run_equals_the_audit_command(model_path, image):
    """The page's statistics come from the report's own run; they must be the audit's, number for number."""
    from inspector.report import build_report

    model = inspector.load(model_path)
    built = build_report(model, image, preprocess="raw", device="cpu")
    expected = audit(model, images=[image], preprocess="raw", device="cpu", quiet=True).to_dict()
    assert built.audit == expected
    assert built.layers_drawn == 3 and "<!DOCTYPE html>" in built.html


def test_layer_selection_draws_only_those_but_tabulates_all(model_path, image, tmp_path):
    text, stdout = report(model_path, image, tmp_path, "--layer", "features.2", "--max", "4")
    page = Page(text)
    assert "1 of 3 layers drawn" in stdout
    assert page.sections == ["layer-1"]
    assert set(page.rows) == set(NAMES)
    assert len(page.images) == 3
    assert "showing 4 of 8" not in text  # the count is drawn into the picture, not the page; captions say it
    assert "(4 of 8)" in text


# ------------------------------------------------------------------------------ bad input

def assert_input_error(code, err, *words):
    assert code == 2, err
    assert err.startswith("inspector: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for word in words:
        assert word.lower() in err.lower(), err


def test_missing_image_or_model_exits_2(model_path, image, tmp_path):
    out = tmp_path / "r.html"
    code, _, err = cli("report", model_path, tmp_path / "nope.png", "--preprocess", "raw", "-o", out)
    assert_input_error(code, err, "nope.png")
    code, _, err = cli("report", tmp_path / "nope.onnx", image, "--preprocess", "raw", "-o", out)
    assert_input_error(code, err, "nope.onnx")
    assert not os.path.exists(out)


def test_unwritable_output_fails_before_the_work(model_path, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    missing_image = tmp_path / "there_is_no_such_image.png"
    # The -o check comes first: the error is about the output, not about the image.
    code, _, err = cli("report", model_path, missing_image, "--preprocess", "raw", "-o", blocker / "r.html")
    assert_input_error(code, err, "cannot be created or written", "-o")
    code, _, err = cli("report", model_path, missing_image, "--preprocess", "raw", "-o", tmp_path)
    assert_input_error(code, err, "is a directory")


def test_missing_preprocessing_is_guessed_and_said(model_path, image, tmp_path):
    code, _, err = cli("report", model_path, image, "-o", tmp_path / "r.html")
    assert code == 0 and "guessed 'torch'" in err and "--preprocess" in err
    text = (tmp_path / "r.html").read_text()
    assert "GUESSED: the file does not say; set it with --preprocess" in text
    assert "the preprocessing was guessed (torch)" in text


@pytest.mark.parametrize("where", ["rendering", "rename"])
def test_interrupt_leaves_nothing_behind(model_path, image, tmp_path, monkeypatch, where):
    import inspector.report as report_module

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    if where == "rendering":
        real = report_module._layer_section
        calls = []

        def interrupted(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(report_module, "_layer_section", interrupted)
    else:  # the whole page written to the temp file, Ctrl-C just before the rename
        def interrupted_replace(src, dst):
            assert os.path.getsize(src) > 1000
            raise KeyboardInterrupt

        monkeypatch.setattr("inspector.atomic.os.replace", interrupted_replace)
    code, _, err = cli("report", model_path, image, "--preprocess", "raw", "--device", "cpu",
                       "-o", out_dir / "report.html")
    monkeypatch.undo()
    assert code == 130 and "interrupted" in err
    assert os.listdir(out_dir) == []


# ------------------------------------------------------------------------------ a real browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Injected into a test copy only, right after the page's CSP (which is widened to let this one script
# run): records CSP violations, then on load whether every image decoded and what the page fetched.
PROBE = """<script>
window.__violations = [];
document.addEventListener("securitypolicyviolation", function (e) { window.__violations.push(e.blockedURI); });
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var probe = document.createElement("pre");
  probe.id = "probe";
  probe.textContent = JSON.stringify({
    images: images.length,
    decoded: images.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    undecoded: images.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).map(function (i) { return i.alt; }),
    resources: performance.getEntriesByType("resource").map(function (r) { return r.name; }),
    violations: window.__violations
  });
  document.body.appendChild(probe);
});
</script>"""


def browse(page_html, tmp_path, name):
    """Load a copy of the page from disk in headless Chromium; the probe's findings."""
    csp_meta = f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
    assert csp_meta in page_html
    widened = csp_meta.replace(CSP, CSP + "; script-src 'unsafe-inline'")
    copy = page_html.replace(csp_meta, widened + PROBE, 1)
    # Lazy images load only when scrolled into view; closed sections must not hide a broken one.
    copy = copy.replace(' loading="lazy"', ' loading="eager"').replace('<details ', "<details open ")
    path = tmp_path / name
    path.write_text(copy, encoding="utf-8")
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--no-first-run", "--disable-component-update", "--disable-sync", "--disable-extensions",
               f"--user-data-dir={tmp_path / ('profile-' + name)}", "--dump-dom", path.as_uri()]
    result = subprocess.run(command, capture_output=True, text=True)  # no time limit: speed is for `make bench`
    found = re.search(r'<pre id="probe">(.*?)</pre>', result.stdout, re.S)
    assert found, f"no probe result (exit {result.returncode}): {result.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1)))


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
def test_every_image_decodes_and_nothing_is_fetched_in_headless_chromium(model_path, image, tmp_path):
    text, _ = report(model_path, image, tmp_path)
    seen = browse(text, tmp_path, "report.html")
    assert seen["images"] == 1 + 2 * len(NAMES)
    assert seen["decoded"] == seen["images"], seen["undecoded"]
    assert seen["resources"] == [] and seen["violations"] == []
    # The probe can fail: the same page with one external picture is caught.
    tampered = text.replace("</footer>", '<img src="http://127.0.0.1:9/x.png" alt="external"></footer>', 1)
    seen = browse(tampered, tmp_path, "tampered.html")
    assert seen["undecoded"] == ["external"]
    assert seen["violations"] or seen["resources"]


@pytest.mark.parametrize("in_graph", [None, True])  # the CPU's default (maps reduced by NumPy), the graph's
def test_one_inference_for_every_map_and_the_audit(model_path, image, tmp_path, monkeypatch, in_graph):
    import onnxruntime as ort

    from inspector.audit import ingraph

    monkeypatch.setattr(ingraph, "_IN_GRAPH", in_graph)
    runs = []
    real_run = ort.InferenceSession.run

    def counted(self, outputs, feeds, *args, **kwargs):
        runs.append(len(next(iter(feeds.values()))))
        return real_run(self, outputs, feeds, *args, **kwargs)

    monkeypatch.setattr(ort.InferenceSession, "run", counted)
    import inspector.cam.html

    monkeypatch.setattr(inspector.cam.html, "attribution_section", lambda *args, **kwargs: "")  # its own runs
    report(model_path, image, tmp_path)
    assert runs == [1]  # the maps and the audit's figures from one run of the one image


@pytest.mark.parametrize("build", [b.tf2onnx_like_nhwc, b.conv_transpose, b.qdq_conv, b.qlinear_conv,
                                   b.constant_weights])
def test_other_layouts_and_conv_kinds_render(build, save, image, tmp_path):
    m, _ = build()
    path = save(m)
    text, _ = report(path, image, tmp_path)
    page = Page(text)
    layers = inspector.load(path).layers
    assert len(page.images) == 1 + 2 * len(layers) and set(page.rows) == {layer.name for layer in layers}
    for img in page.images:
        assert decode_png(img["src"]) == (int(img["width"]), int(img["height"]))
