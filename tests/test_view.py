"""`inspector view`'s server: its API against the CLI's own output, and every local-server refusal."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest

import builders as b
from view_helpers import CLASSES, HOSTILE, Client, classifier, hostile_model, start

from inspector import cli


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    import onnx

    folder = tmp_path_factory.mktemp("view")
    m, weights = hostile_model()
    model = folder / "hostile.onnx"
    onnx.save(m, str(model))
    photos = [b.random_photo(folder / "a.png", 40, 48, seed=1), b.random_photo(folder / "b.jpg", 30, 30, seed=2)]
    server = start([model], photos)
    yield {"folder": folder, "model": str(model), "photos": photos, "weights": weights, "server": server,
           "client": Client(server)}
    server.shutdown()
    server.server_close()


def cli_json(capsys, argv) -> object:
    capsys.readouterr()
    assert cli.main(argv) == 0
    return json.loads(capsys.readouterr().out)


# ------------------------------------------------------------------ API against the CLI

def test_layer_list_equals_layers_json(env, capsys):
    expected = cli_json(capsys, ["layers", env["model"], "--json"])
    assert env["client"].json("/api/layers?model=0") == expected
    assert expected[0]["name"].count(HOSTILE) == 1  # the hostile name is data, returned as it is


def test_maps_equal_the_maps_command_npz(env, tmp_path):
    client = env["client"]
    for image_id, photo in enumerate(env["photos"]):
        expected = b.maps_through_cli(env["model"], photo, tmp_path / str(image_id))
        layers = client.json("/api/layers?model=0")
        assert len(layers) == len(expected) == 2
        for layer in layers:
            got = client.array(f"/api/maps?model=0&layer={layer['index']}&image={image_id}")
            np.testing.assert_array_equal(got, expected[layer["name"]])


def test_maps_are_the_convolution_of_the_photo(env):
    """Independent of the CLI: NumPy's convolution of the photo as the model sees it."""
    import inspector

    model = inspector.load(env["model"])
    x = model.image_batch([env["photos"][0]])
    w = env["weights"]
    first = b.relu(b.conv2d(x, w["w1"], w["b1"], pad=1))[0]
    got = env["client"].array("/api/maps?model=0&layer=0&image=0")
    np.testing.assert_allclose(got, first, rtol=1e-4, atol=1e-4)


def test_uploaded_photo_gives_the_same_maps_as_the_file(env, tmp_path):
    client = env["client"]
    photo = env["photos"][1]
    with open(photo, "rb") as handle:
        data = handle.read()
    status, _, body = client.call("/api/images", method="POST", body=data, headers={"X-Image-Name": "b%20copy.jpg"})
    assert status == 200, body
    image = json.loads(body)
    assert image["name"] == "b copy.jpg"
    expected = b.maps_through_cli(env["model"], photo, tmp_path)
    for index, name in enumerate(expected):
        np.testing.assert_array_equal(client.array(f"/api/maps?model=0&layer={index}&image={image['id']}"),
                                      expected[name])
    assert image["id"] in [i["id"] for i in client.json("/api/info")["images"]]


def test_filters_are_the_weights(env):
    client = env["client"]
    np.testing.assert_array_equal(client.array("/api/filters?model=0&layer=0&format=raw"), env["weights"]["w1"])
    np.testing.assert_array_equal(client.array("/api/filters?model=0&layer=1&format=raw"), env["weights"]["w2"])
    status, headers, png = client.call("/api/filters?model=0&layer=1")
    assert status == 200 and headers["Content-Type"] == "image/png" and png.startswith(b"\x89PNG")


def test_cam_equals_the_cam_command(env, tmp_path, capsys):
    npz = str(tmp_path / "cam.npz")
    summary = cli_json(capsys, ["cam", env["model"], env["photos"][0], "--json", "--npz", npz, "-o", str(tmp_path)])
    got = env["client"].json("/api/cam?model=0&image=0")
    for key in ("method", "layer", "target", "target_label", "input_size"):
        assert got[key] == summary[key], key
    with np.load(npz) as data:
        np.testing.assert_array_equal(env["client"].array("/api/cam?model=0&image=0&format=raw"), data["cam"])


def test_audit_colours_follow_the_audit_command(env, tmp_path, capsys):
    out = tmp_path / "audit.json"
    assert cli.main(["audit", env["model"], *env["photos"], "--json", str(out), "-q"]) == 0
    expected = json.loads(out.read_text())["layers"]
    got = env["client"].json("/api/audit?model=0")["layers"]
    assert [layer["dead_filters"] for layer in got] == [layer["dead_filters"] for layer in expected]
    assert expected[0]["dead_filters"] == [0]  # the zeroed filter, from the weights alone
    assert [layer["verdict"] for layer in got] == ["dead", "ok"]


# ------------------------------------------------------------------ two models, outputs, background jobs

@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A float classifier (A), its int8 QDQ copy from onnxruntime's quantizer (B), three photos."""
    import onnx

    folder = tmp_path_factory.mktemp("view_pair")
    m, arrays = classifier(seed=4)
    path_a = str(folder / "float.onnx")
    onnx.save(m, path_a)
    photos = [b.random_photo(folder / f"p{i}.png", 16, 16, seed=20 + i) for i in range(3)]
    calibration = np.stack([np.asarray(__import__("PIL.Image").Image.open(p).convert("RGB"), np.float32)
                            .transpose(2, 0, 1) / 255.0 for p in photos])
    path_b = b.quantize_qdq(path_a, str(folder / "int8.onnx"), calibration)
    server = start([path_a, path_b], photos)
    yield {"a": path_a, "b": path_b, "photos": photos, "arrays": arrays, "server": server, "client": Client(server)}
    server.shutdown()
    server.server_close()


def test_pairs_are_diffs_pairing(pair, capsys):
    expected = cli_json(capsys, ["diff", pair["a"], pair["b"], "--json", "-", "-q"])
    got = pair["client"].json("/api/pairs")
    assert [(layer["index"], layer["index_b"], layer["match"]) for layer in got["layers"]] == \
           [(layer["index"], layer["index_b"], layer["match"]) for layer in expected["layers"]]
    assert len(got["layers"]) == 2 and got["unmatched"] == expected["unmatched"]
    assert pair["client"].json("/api/info")["compare"] is True


def test_per_layer_sqnr_of_an_image_equals_diffs(pair, capsys):
    client = pair["client"]
    for image_id, photo in enumerate(pair["photos"][:2]):
        expected = cli_json(capsys, ["diff", pair["a"], pair["b"], photo, "--json", "-", "-q"])
        got = client.json(f"/api/diff?image={image_id}")
        assert got["images"]["count"] == 1
        for mine, theirs in zip(got["layers"], expected["layers"], strict=True):
            for key in ("index", "index_b", "sqnr_db", "cosine", "max_abs_error", "worst_channels", "compared"):
                assert mine[key] == theirs[key], key
        assert all(isinstance(layer["sqnr_db"], float) for layer in got["layers"])  # int8 noise: finite


def test_pair_maps_are_both_models_maps_and_give_the_sqnr(pair):
    """Independent of diff: onnxruntime on the unmodified files gives each side's maps, and NumPy's SQNR of
    those maps is the one the page shows."""
    import onnxruntime as ort

    client = pair["client"]
    photo = pair["photos"][0]
    x = np.asarray(__import__("PIL.Image").Image.open(photo).convert("RGB"), np.float32).transpose(2, 0, 1)[None] / 255
    figures = {layer["index"]: layer for layer in client.json("/api/diff?image=0")["layers"]}
    for path, model in ((pair["a"], 0), (pair["b"], 1)):
        import onnx

        m = onnx.load(path)
        wanted = {0: "r1", 1: "r2"} if model == 0 else None
        if wanted is None:  # B: the DequantizeLinear after each Relu's QuantizeLinear (the conv layer's output)
            layers = client.json("/api/layers?model=1")
            wanted = {layer["index"]: layer["output"] for layer in layers}
        m.graph.output.extend([onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                               for t in wanted.values()])
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        values = dict(zip(wanted.values(), session.run(list(wanted.values()), {"x": x})))
        for index, tensor in wanted.items():
            got = client.array(f"/api/maps?model={model}&layer={index}&image=0&feeding=diff")
            np.testing.assert_allclose(got, values[tensor][0], rtol=1e-5, atol=1e-5 * float(np.abs(got).max()))
    for index in figures:
        a = client.array(f"/api/maps?model=0&layer={index}&image=0&feeding=diff").astype(np.float64)
        b_maps = client.array(f"/api/maps?model=1&layer={index}&image=0&feeding=diff").astype(np.float64)
        sqnr = 10 * np.log10((a ** 2).sum() / ((a - b_maps) ** 2).sum())
        assert figures[index]["sqnr_db"] == pytest.approx(sqnr, abs=2e-3)


def test_top_outputs_equal_onnxruntime_on_the_unmodified_model(pair):
    import onnxruntime as ort

    session = ort.InferenceSession(pair["a"], providers=["CPUExecutionProvider"])
    for image_id, photo in enumerate(pair["photos"]):
        x = np.asarray(__import__("PIL.Image").Image.open(photo).convert("RGB"), np.float32).transpose(2, 0, 1)
        (probs,) = session.run(["probs"], {"x": x[None] / 255})
        got = pair["client"].json(f"/api/outputs?model=0&image={image_id}")["outputs"]
        assert [output["name"] for output in got] == ["probs"] and got[0]["kind"] == "classes"
        order = np.argsort(-probs[0])
        assert [entry["index"] for entry in got[0]["top"]] == order[:4].tolist()
        assert [entry["label"] for entry in got[0]["top"]] == [f"class {i} ({CLASSES[i]})" for i in order[:4]]
        np.testing.assert_allclose([entry["value"] for entry in got[0]["top"]], probs[0][order[:4]], rtol=1e-5)


def test_top_outputs_of_a_detector_name_each_class_by_its_maximum():
    """YOLOv8's (1, 4 + K, anchors): the last K channels are the classes, each scored by its maximum."""
    from inspector.view.state import top_outputs

    values = b.rng(3).standard_normal((1, 4 + 3, 50)).astype(np.float32)
    (entry,) = top_outputs({"output0": values}, ["a", "b", "c"])
    per_class = values[0, 4:].max(axis=1)
    assert entry["kind"] == "class maximum"
    assert [t["index"] for t in entry["top"]] == np.argsort(-per_class).tolist()
    assert [t["channel"] for t in entry["top"]] == (np.argsort(-per_class) + 4).tolist()
    assert [t["value"] for t in entry["top"]] == [float(v) for v in np.sort(per_class)[::-1]]
    (plain,) = top_outputs({"maps": values[:, :1, :, None]}, None)  # no names: its range only
    assert plain["top"] == [] and plain["max"] == float(values[0, 0].max())


def _wait(client, job_id):
    import time

    for _ in range(600):
        job = client.json(f"/api/jobs?id={job_id}")
        if job["state"] != "running":
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still running")


def test_cam_job_runs_in_the_background_with_progress(pair, tmp_path, capsys):
    client = pair["client"]
    status, _, body = client.call("/api/jobs?kind=cam&model=0&image=1", method="POST", body=b"")
    assert status == 202
    job = json.loads(body)
    again = json.loads(client.call("/api/jobs?kind=cam&model=0&image=1", method="POST", body=b"")[2])
    assert again["id"] == job["id"]  # the same work is one job
    done = _wait(client, job["id"])
    assert done["state"] == "done" and done["step"] == "scorecam" and done["done"] == done["total"] >= 1
    npz = str(tmp_path / "cam.npz")
    cli_json(capsys, ["cam", pair["a"], pair["photos"][1], "--json", "--npz", npz, "-o", str(tmp_path)])
    with np.load(npz) as data:
        np.testing.assert_array_equal(client.array("/api/cam?model=0&image=1&format=raw"), data["cam"])
    assert job["id"] in [j["id"] for j in client.json("/api/jobs")["jobs"]]


def test_cam_method_layer_and_target_are_changeable_as_cams_flags(pair, tmp_path, capsys):
    client = pair["client"]
    npz = str(tmp_path / "cam.npz")
    summary = cli_json(capsys, ["cam", pair["a"], pair["photos"][0], "--method", "ablationcam", "--layer", "conv1",
                                "--target", "owl", "--json", "--npz", npz, "-o", str(tmp_path)])
    query = "model=0&image=0&method=ablationcam&layer=0&target=owl"
    job = json.loads(client.call(f"/api/jobs?kind=cam&{query}", method="POST", body=b"")[2])
    assert _wait(client, job["id"])["state"] == "done"
    got = client.json(f"/api/cam?{query}")
    assert (got["method"], got["layer"], got["target_label"]) == ("ablationcam", "conv1", "class 2 (owl)")
    assert got["target_label"] == summary["target_label"]
    with np.load(npz) as data:
        np.testing.assert_array_equal(client.array(f"/api/cam?{query}&format=raw"), data["cam"])
    status, _, body = client.call("/api/cam?model=0&image=0&method=gradcam")
    assert status == 400 and b"unknown CAM method" in body
    status, _, body = client.call("/api/cam?model=0&image=0&target=zebra")
    assert status == 400 and b"not a class name" in body


def test_layer_maps_are_answered_while_a_job_runs(pair, monkeypatch):
    """A job that cannot finish until a layer's maps were answered: a click never waits for the background."""
    import threading

    state = pair["server"].explorer.models[0]
    answered = threading.Event()
    original = state.audit

    def slow_audit(paths):
        assert answered.wait(60), "the layer's maps waited for the job"
        return original(paths)

    monkeypatch.setattr(state, "audit", slow_audit)
    client = pair["client"]
    status, _, body = client.call("/api/jobs?kind=audit&model=0", method="POST", body=b"")
    assert status == 202
    job = json.loads(body)
    assert client.json(f"/api/jobs?id={job['id']}")["state"] == "running"
    assert client.array("/api/maps?model=0&layer=1&image=2").shape == (6, 8, 8)
    answered.set()
    assert _wait(client, job["id"])["state"] == "done"
    assert [layer["verdict"] for layer in client.json("/api/audit?model=0")["layers"]] == ["ok", "ok"]


def test_a_failed_job_says_why(pair, monkeypatch):
    from inspector.errors import InspectorError

    state = pair["server"].explorer.models[1]

    def broken(image, *choice):
        raise InspectorError("no CAM for you")

    monkeypatch.setattr(state, "cam", broken)
    job = json.loads(pair["client"].call("/api/jobs?kind=cam&model=1&image=0", method="POST", body=b"")[2])
    done = _wait(pair["client"], job["id"])
    assert done["state"] == "failed" and done["error"] == "no CAM for you"


@pytest.mark.parametrize("path", ["/api/pairs", "/api/diff?image=0", "/api/outputs?model=0&image=0", "/api/jobs",
                                  "/api/jobs?id=j1", "/api/maps?model=1&layer=0&image=0&feeding=diff"])
def test_new_endpoints_need_the_token_and_the_host(pair, path):
    client = pair["client"]
    for token in (False, "wrong"):
        status, _, body = client.call(path, token=token)
        assert status == 403 and b"sqnr" not in body and b"probs" not in body
    assert client.call(path, host="evil.example:%d" % client.port)[0] == 421
    assert client.call(path)[0] == 200


def test_jobs_cannot_start_without_the_token_or_from_a_foreign_host(pair):
    client = pair["client"]
    before = len(pair["server"].explorer.jobs.all())
    assert client.call("/api/jobs?kind=cam&model=0&image=2", method="POST", body=b"", token=False)[0] == 403
    assert client.call("/api/jobs?kind=cam&model=0&image=2", method="POST", body=b"", host="evil.example")[0] == 421
    assert len(pair["server"].explorer.jobs.all()) == before


@pytest.mark.parametrize("path", ["/api/jobs?kind=cam&model=0&image=../../etc/passwd", "/api/jobs?kind=shell&model=0",
                                  "/api/jobs?kind=cam&model=5&image=0", "/api/jobs?kind=audit&model=x"])
def test_unknown_jobs_are_refused(pair, path):
    assert pair["client"].call(path, method="POST", body=b"")[0] == 404


@pytest.mark.parametrize("path", ["/api/jobs?id=../../etc/passwd", "/api/jobs?id=j999", "/api/diff?image=/etc/passwd",
                                  "/api/maps?model=0&layer=0&image=0&feeding=/etc/passwd",
                                  "/api/outputs?model=0&image=../x"])
def test_new_endpoints_open_no_client_path(pair, path):
    status, _, body = pair["client"].call(path)
    assert status == 404 and b"root:" not in body


def test_one_model_has_no_pairs(env):
    for path in ("/api/pairs", "/api/diff?image=0", "/api/maps?model=0&layer=0&image=0&feeding=diff"):
        assert env["client"].call(path)[0] == 404


def test_the_audit_without_overlap_is_the_same_audit(pair):
    """The explorer's audit computes the weights' statistics before the images (its peak memory); the result
    is the overlapped audit's, to the bit."""
    import inspector
    from inspector.audit import audit

    model = inspector.load(pair["a"])
    together = audit(model, pair["photos"], quiet=True).to_dict()
    serial = audit(model, pair["photos"], quiet=True, overlap=False).to_dict()
    assert serial["layers"] == together["layers"] and serial["summary"] == together["summary"]


# ------------------------------------------------------------------ security

@pytest.mark.parametrize("token", [None, "", "wrong", "x" * 43])
def test_api_without_the_token_is_refused(env, token):
    for path in ("/api/info", "/api/layers?model=0", "/api/maps?model=0&layer=0&image=0"):
        status, _, body = env["client"].call(path, token=token or False)
        assert status == 403, path
        assert b"Conv" not in body


def test_upload_without_the_token_is_refused(env):
    before = len(env["server"].explorer.uploads)
    status, _, _ = env["client"].call("/api/images", token=False, method="POST", body=b"\x89PNG")
    assert status == 403 and len(env["server"].explorer.uploads) == before


@pytest.mark.parametrize("host", ["evil.example:{port}", "127.0.0.1:1", "localhost", "127.0.0.1",
                                  "127.0.0.1.nip.io:{port}", "[::1]:{port}", ""])
def test_foreign_host_is_refused(env, host):
    client = env["client"]
    host = host.format(port=client.port)
    for path in ("/", "/static/app.js", "/api/info"):
        status, _, body = client.call(path, host=host or " ")
        assert status in (403, 421), (host, path)
        assert b"X-Inspector-Token" not in body and b"Conv" not in body


def test_localhost_host_is_accepted(env):
    assert env["client"].call("/api/info", host=f"localhost:{env['client'].port}")[0] == 200


def test_oversized_upload_is_refused_before_reading(env):
    from inspector.view import MAX_UPLOAD_BYTES

    client = env["client"]
    before = len(env["server"].explorer.uploads)
    status, _, _ = client.call("/api/images", method="POST", body=b"\0" * 16,
                               headers={"Content-Length": str(MAX_UPLOAD_BYTES + 1)})
    assert status == 413 and len(env["server"].explorer.uploads) == before


@pytest.mark.parametrize("data", [b"not an image", b"\x89PNG\r\n\x1a\n" + b"\0" * 40])
def test_upload_that_is_not_an_image_is_refused(env, data):
    before = len(env["server"].explorer.uploads)
    status, _, body = env["client"].call("/api/images", method="POST", body=data)
    assert status == 400 and len(env["server"].explorer.uploads) == before
    assert b"Traceback" not in body


def test_decompression_bomb_upload_is_refused(env):
    from PIL import Image

    from inspector.preprocess import MAX_IMAGE_PIXELS

    side = int(MAX_IMAGE_PIXELS ** 0.5) * 2 + 2  # a few KB of PNG, past twice the pixel limit
    buffer = io.BytesIO()
    Image.new("1", (side, side)).save(buffer, format="PNG")
    status, _, body = env["client"].call("/api/images", method="POST", body=buffer.getvalue())
    assert status == 400 and b"bomb" in body


@pytest.mark.parametrize("path", [
    "/api/maps?model=0&layer=0&image=../../../../etc/passwd", "/api/maps?model=0&layer=0&image=/etc/passwd",
    "/api/maps?model=0&layer=0&image={photo}", "/api/cam?model=0&image={photo}",
    "/api/layers?model={model}", "/api/layers?model=../../etc/passwd", "/api/filters?model=0&layer=../x",
    "/static/../../../../etc/passwd", "/static/..%2f..%2fpyproject.toml", "/etc/passwd", "/{model}",
    "/api/maps?model=0&layer=99&image=0", "/api/maps?model=7&layer=0&image=0",
])
def test_client_paths_are_never_opened(env, path):
    path = path.format(photo=env["photos"][0], model=env["model"])
    status, _, body = env["client"].call(path)
    assert status == 404, path
    assert b"root:" not in body and b"[project]" not in body


def test_hostile_names_are_data_and_the_page_inserts_text_only(env):
    layers = env["client"].json("/api/layers?model=0")
    assert HOSTILE in layers[0]["name"]
    status, _, script = env["client"].call("/static/app.js", token=False)
    assert status == 200
    for sink in (b"innerHTML", b"outerHTML", b"insertAdjacentHTML", b"document.write", b"eval("):
        assert sink not in script, sink


def test_every_answer_carries_the_policy(env):
    client = env["client"]
    for path, token in (("/", False), ("/static/app.css", False), ("/api/info", True), ("/api/info", False),
                        ("/nothing", True)):
        _, headers, _ = client.call(path, token=token)
        policy = headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "http" not in policy and "*" not in policy
        assert headers["X-Content-Type-Options"] == "nosniff"


def test_page_names_no_other_origin(env):
    client = env["client"]
    for path in ("/", "/static/app.js", "/static/app.css"):
        status, _, body = client.call(path, token=False)
        assert status == 200
        assert b"http://" not in body and b"https://" not in body and b"//cdn" not in body, path


def test_server_listens_on_loopback_only_and_logs_no_token(env, capfd):
    server = env["server"]
    assert server.server_address[0] == "127.0.0.1"
    assert server.url.startswith(f"http://127.0.0.1:{server.port}/#token=")
    assert len(server.token) >= 40
    env["client"].call("/api/info")
    env["client"].call("/api/info", token="wrong")
    captured = capfd.readouterr()
    assert server.token not in captured.out + captured.err
    assert "GET" not in captured.err  # http.server's request log is off


def test_two_servers_have_different_tokens(env):
    other = start([env["model"]], [])
    try:
        assert other.token != env["server"].token
        assert Client(other).call("/api/info", token=env["server"].token)[0] == 403
    finally:
        other.shutdown()
        other.server_close()


# ------------------------------------------------------------------ the command

def test_command_refuses_bad_input(tmp_path, capsys):
    assert cli.main(["view", str(tmp_path / "missing.onnx"), "--no-browser"]) == 2
    assert "error" in capsys.readouterr().err
    assert cli.main(["view", "photo.png", "--no-browser"]) == 2
    assert "model" in capsys.readouterr().err


def test_command_prints_the_address_and_serves(env, tmp_path):
    import subprocess
    import sys
    import urllib.request

    process = subprocess.Popen([sys.executable, "-m", "inspector", "view", env["model"], env["photos"][0],
                                "--no-browser"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")})
    try:
        line = process.stdout.readline()
        assert line.startswith("inspector view: http://127.0.0.1:"), line
        url = line.split(": ", 1)[1].strip()
        base, token = url.split("/#token=")
        request = urllib.request.Request(base + "/api/info", headers={"X-Inspector-Token": token})
        with urllib.request.urlopen(request, timeout=30) as response:
            info = json.load(response)
        assert info["images"] == [{"id": "0", "name": os.path.basename(env["photos"][0])}]
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_a_folder_gives_its_images(env, tmp_path, capsys):
    import shutil

    folder = tmp_path / "photos"
    folder.mkdir()
    for photo in env["photos"]:
        shutil.copy(photo, folder)
    (folder / "notes.txt").write_text("not an image")
    server = start([env["model"]], [folder])
    try:
        names = [image["name"] for image in Client(server).json("/api/info")["images"]]
        assert names == ["a.png", "b.jpg"]
    finally:
        server.shutdown()
        server.server_close()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["view", env["model"], str(empty), "--no-browser"]) == 2
    assert "no images in" in capsys.readouterr().err


def test_maps_past_the_budget_come_one_layer_at_a_time(env, tmp_path, monkeypatch):
    from inspector.view import state

    monkeypatch.setattr(state, "ALL_MAPS_BUDGET", 1)  # every layer at once is "too large"
    server = start([env["model"]], [env["photos"][0]])
    try:
        expected = b.maps_through_cli(env["model"], env["photos"][0], tmp_path)
        client = Client(server)
        for index, name in enumerate(expected):
            np.testing.assert_array_equal(client.array(f"/api/maps?model=0&layer={index}&image=0"), expected[name])
        assert server.explorer.models[0]._maps == {} and len(server.explorer.models[0]._single) == 2
    finally:
        server.shutdown()
        server.server_close()
