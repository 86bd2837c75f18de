"""`inspector view`'s server: its API against the CLI's own output, and every local-server refusal."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest

import builders as b
from view_helpers import HOSTILE, Client, hostile_model, start

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
