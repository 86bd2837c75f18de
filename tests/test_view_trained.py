"""`inspector view` on trained models of other frameworks (issue 22's done-when): Keras VGG16 (tf2onnx, NHWC),
a YOLOv8 detector (Ultralytics) and the PP-OCRv4 text detector (Paddle, open input size).

Through the server's API, against the CLI on the same files: the layer list against `layers --json`, a dropped
(uploaded) photo's maps against `maps --npz` on that photo's file, the CAM against `cam --npz` and its picture
against the PNG `cam` writes, the audit's colours against `audit --json`. Skipped where `make models-trained`
could not fetch the models, failed instead under INSPECTOR_REQUIRE_MODELS=1 (tests/trained.py).
"""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

import trained
from view_helpers import Client, start

from inspector import cli
from inspector.view.state import verdict

pytestmark = pytest.mark.slow

# model, the photo on the command line, the photo dropped in the page, the CAM's method (None: cam's choice;
# VGG16's choice is ScoreCAM, minutes on 2 cores: its EigenCAM is compared, ScoreCAM's choice on the tiny models)
CASES = [("vgg16_tumor", "grace_hopper.jpg", "chelsea.png", "eigencam"),
         ("yolov8n_doclaynet", "page.png", "text_photo.jpg", None),
         ("ppocrv4_det", "page.png", "text_photo.jpg", None)]


def _photo(entry, name):
    found = [p for p in trained.photos(entry) if os.path.basename(p) == name]
    if not found:
        trained.skip(f"photo {name} not fetched")
    return found[0]


def _cli(capsys, argv):
    capsys.readouterr()
    code = cli.main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err[-2000:]
    return captured.out


def _wait(client, job_id):
    import time

    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        job = client.json(f"/api/jobs?id={job_id}")
        if job["state"] != "running":
            return job
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} did not end")


@pytest.mark.parametrize("name,given,dropped,method", CASES, ids=[case[0] for case in CASES])
def test_view_equals_the_cli_on_a_trained_model(name, given, dropped, method, tmp_path, capsys):
    path, entry = trained.model(name)
    given, dropped = _photo(entry, given), _photo(entry, dropped)
    server = start([path], [given])
    client = Client(server)
    try:
        # The audit starts in the background, as the page starts it, while the rest is checked.
        audit_job = json.loads(client.call("/api/jobs?kind=audit&model=0", method="POST", body=b"")[2])
        layers = client.json("/api/layers?model=0")
        assert layers == json.loads(_cli(capsys, ["layers", path, "--json"]))

        with open(dropped, "rb") as handle:
            status, _, body = client.call("/api/images", method="POST", body=handle.read(),
                                          headers={"X-Image-Name": os.path.basename(dropped)})
        assert status == 200, body
        image = json.loads(body)["id"]
        chosen = sorted({0, len(layers) // 2, len(layers) - 1})
        npz = str(tmp_path / "maps.npz")
        _cli(capsys, ["maps", path, dropped, *[a for i in chosen for a in ("-l", str(i))], "--npz", npz, "--no-png",
                      "-o", str(tmp_path / "maps")])
        with np.load(npz) as expected:
            for index in chosen:
                np.testing.assert_array_equal(client.array(f"/api/maps?model=0&layer={index}&image={image}"),
                                              expected[layers[index]["name"]], err_msg=layers[index]["name"])

        query = f"model=0&image={image}" + (f"&method={method}" if method else "")
        cam_job = json.loads(client.call(f"/api/jobs?kind=cam&{query}", method="POST", body=b"")[2])
        cam_npz = str(tmp_path / "cam.npz")
        summary = json.loads(_cli(capsys, ["cam", path, dropped, *(["--method", method] if method else []),
                                           "--json", "--npz", cam_npz, "-o", str(tmp_path / "cam")]))
        assert _wait(client, cam_job["id"])["state"] == "done"
        got = client.json(f"/api/cam?{query}")
        for key in ("method", "layer", "target", "target_label", "input_size"):
            assert got[key] == summary[key], key
        with np.load(cam_npz) as data:
            np.testing.assert_array_equal(client.array(f"/api/cam?{query}&format=raw"), data["cam"])
        (written,) = [f for f in os.listdir(tmp_path / "cam") if f.endswith(".png")]
        status, _, png = client.call(f"/api/cam?{query}&format=png")
        with Image.open(io.BytesIO(png)) as page_picture, Image.open(tmp_path / "cam" / written) as cli_picture:
            np.testing.assert_array_equal(np.asarray(page_picture.convert("RGB")), np.asarray(cli_picture.convert("RGB")))

        assert _wait(client, audit_job["id"])["state"] == "done"
        audit_json = tmp_path / "audit.json"
        _cli(capsys, ["audit", path, given, "--json", str(audit_json), "-q"])
        expected = json.loads(audit_json.read_text())["layers"]
        got = client.json("/api/audit?model=0")["layers"]
        assert [layer["verdict"] for layer in got] == [verdict(layer) for layer in expected]
        assert [layer["dead_filters"] for layer in got] == [layer["dead_filters"] for layer in expected]
        assert [layer["dead_channels"] for layer in got] == [layer["dead_channels"] for layer in expected]
    finally:
        server.shutdown()
        server.server_close()
