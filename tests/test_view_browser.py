"""`inspector view`'s page in the system Chromium (Playwright with executable_path: no browser download).

The page is opened, a layer clicked, and DOM values checked against the API; any console error, page error
or request that leaves 127.0.0.1 fails the test. With INSPECTOR_VIEW_SCREENSHOT=FILE the trained-model test
saves the page (the README's picture, docs/images/view.png).
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

import builders as b
import trained
from view_helpers import CLASSES, HOSTILE, Client, classifier, hostile_model, start

CHROMIUM = os.environ.get("INSPECTOR_CHROMIUM", "/usr/bin/chromium")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extra")
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian's chromium; INSPECTOR_CHROMIUM to point elsewhere)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--headless"])
        yield chromium
        chromium.close()


class Watched:
    """A page whose console errors, page errors and requests off 127.0.0.1 are collected (and blocked)."""

    def __init__(self, browser, server, size=(1280, 800)):
        self.origin = f"http://127.0.0.1:{server.port}"
        self.errors: list[str] = []
        self.foreign: list[str] = []
        self.context = browser.new_context(viewport={"width": size[0], "height": size[1]})
        self.page = self.context.new_page()
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.context.route("**/*", self._route)
        self.page.goto(server.url)

    def _route(self, route):
        url = route.request.url
        if url.startswith(self.origin + "/") or url.startswith(("blob:", "data:")):
            route.continue_()
        else:
            self.foreign.append(url)
            route.abort()

    def check(self):
        assert self.errors == []
        assert self.foreign == []

    def close(self):
        self.context.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    import onnx

    folder = tmp_path_factory.mktemp("view_browser")
    m, _ = hostile_model()
    model = folder / "hostile.onnx"
    onnx.save(m, str(model))
    photo = b.random_photo(folder / "photo.png", 40, 48, seed=3)
    server = start([model], [photo])
    yield server
    server.shutdown()
    server.server_close()


def test_page_lists_layers_as_text_and_shows_maps_equal_to_the_api(browser, served):
    client = Client(served)
    watched = Watched(browser, served)
    page = watched.page
    try:
        page.wait_for_selector("#layers li[data-verdict]")  # the list and the audit's colours
        items = page.locator("#layers li")
        layers = client.json("/api/layers?model=0")
        assert items.count() == len(layers)
        # The hostile name is shown as text; no element was made from it, no handler ran.
        assert HOSTILE in items.nth(0).text_content()
        assert page.locator("#layers img").count() == 0
        assert page.evaluate("window.__pwned") is None
        audit = client.json("/api/audit?model=0")["layers"]
        assert [items.nth(i).get_attribute("data-verdict") for i in range(len(layers))] == \
               [layer["verdict"] for layer in audit]
        # The token left the address bar.
        assert "token" not in page.url

        page.select_option("#image", "0")
        items.nth(1).click()
        page.wait_for_selector("#maps-info[data-shape]")
        maps = client.array("/api/maps?model=0&layer=1&image=0")
        info = page.locator("#maps-info")
        assert info.get_attribute("data-shape") == ",".join(map(str, maps.shape))
        assert float(info.get_attribute("data-max")) == pytest.approx(float(maps.max()), rel=1e-6)
        assert page.locator("#maps canvas").count() == min(maps.shape[0], 64)
        # The value under the cursor: the centre of a pixel of channel 5's canvas.
        canvas = page.locator('#maps canvas[data-channel="5"]')
        box = canvas.bounding_box()
        height, width = maps.shape[1:]
        y, x = height // 3, width - 2
        page.mouse.move(box["x"] + (x + 0.5) * box["width"] / width, box["y"] + (y + 0.5) * box["height"] / height)
        readout = page.locator("#readout")
        assert (readout.get_attribute("data-y"), readout.get_attribute("data-x")) == (str(y), str(x))
        assert np.float32(readout.get_attribute("data-value")) == maps[5, y, x]
        # The canvas colours: the channel's maximum is drawn in viridis' last colour.
        peak = np.unravel_index(int(np.argmax(maps[5])), maps[5].shape)
        rgba = page.evaluate(
            "([y, x]) => Array.from(document.querySelector('#maps canvas[data-channel=\"5\"]')"
            ".getContext('2d').getImageData(x, y, 1, 1).data)", [int(peak[0]), int(peak[1])])
        assert rgba == [253, 231, 37, 255]
        # A click on a channel: its larger view and statistics, against NumPy on the API's values.
        canvas.click()
        stats = page.locator("#channel-stats")
        assert page.locator("#channel").is_visible()
        assert stats.get_attribute("data-channel") == "5"
        assert float(stats.get_attribute("data-mean")) == pytest.approx(float(maps[5].astype(np.float64).mean()),
                                                                        rel=1e-6, abs=1e-9)
        assert float(stats.get_attribute("data-zeros")) == pytest.approx(float(np.mean(maps[5] == 0)))
        assert float(stats.get_attribute("data-max")) == float(maps[5].max())
        # The search box hides what does not match.
        page.fill("#search", "features.2")
        assert [items.nth(i).is_hidden() for i in range(len(layers))] == [True, False]
        watched.check()
    finally:
        watched.close()


def test_upload_through_the_file_chooser(browser, served, tmp_path):
    client = Client(served)
    photo = b.random_photo(tmp_path / "upload<b>.png", 30, 30, seed=9)
    watched = Watched(browser, served)
    page = watched.page
    try:
        page.wait_for_selector("#layers li")
        page.locator("#layers li").nth(0).click()
        page.set_input_files("#upload", photo)
        page.wait_for_selector("#maps-info[data-shape]")  # (the page's CSP forbids wait_for_function's eval)
        image_id = page.eval_on_selector("#image", "e => e.value")
        assert image_id.startswith("u")
        assert page.eval_on_selector("#image", "e => e.selectedOptions[0].textContent") == "upload<b>.png"
        assert page.locator("#image b").count() == 0
        maps = client.array(f"/api/maps?model=0&layer=0&image={image_id}")
        assert page.locator("#maps-info").get_attribute("data-shape") == ",".join(map(str, maps.shape))
        watched.check()
    finally:
        watched.close()


@pytest.fixture(scope="module")
def served_pair(tmp_path_factory):
    """A float classifier and its int8 QDQ copy (onnxruntime's quantizer), two photos."""
    import onnx
    from PIL import Image

    folder = tmp_path_factory.mktemp("view_browser_pair")
    m, _ = classifier(seed=5)
    path_a = str(folder / "float.onnx")
    onnx.save(m, path_a)
    photos = [b.random_photo(folder / f"p{i}.png", 16, 16, seed=30 + i) for i in range(2)]
    calibration = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32).transpose(2, 0, 1) / 255
                            for p in photos])
    path_b = b.quantize_qdq(path_a, str(folder / "int8.onnx"), calibration)
    server = start([path_a, path_b], photos)
    yield server
    server.shutdown()
    server.server_close()


def test_two_models_side_by_side_with_outputs_and_a_background_cam(browser, served_pair):
    client = Client(served_pair)
    watched = Watched(browser, served_pair)
    page = watched.page
    try:
        page.wait_for_selector("#layers li[data-verdict]")  # the audit ran as a job and coloured the list
        page.select_option("#image", "1")
        page.wait_for_selector("#layers li[data-sqnr]")
        diff = client.json("/api/diff?image=1")
        items = page.locator("#layers li")
        assert [float(items.nth(i).get_attribute("data-sqnr")) for i in range(items.count())] == \
               [layer["sqnr_db"] for layer in diff["layers"]]
        items.nth(1).click()
        page.wait_for_selector("#maps-b-info[data-shape]")
        assert float(page.locator("#pair-info").get_attribute("data-sqnr")) == diff["layers"][1]["sqnr_db"]
        maps_b = client.array(f"/api/maps?model=1&layer={diff['layers'][1]['index_b']}&image=1&feeding=diff")
        info_b = page.locator("#maps-b-info")
        assert info_b.get_attribute("data-shape") == ",".join(map(str, maps_b.shape))
        assert float(info_b.get_attribute("data-max")) == pytest.approx(float(maps_b.max()), rel=1e-6)
        assert page.locator("#maps-b canvas").count() == maps_b.shape[0]
        # The model's top outputs, as the API gives them (checked against onnxruntime in test_view.py).
        page.click("#outputs-button")
        page.wait_for_selector("#outputs li")
        top = client.json("/api/outputs?model=0&image=1")["outputs"][0]["top"]
        shown = page.locator("#outputs li")
        assert [shown.nth(i).text_content().split(":")[0] for i in range(shown.count())] == \
               [entry["label"] for entry in top]
        assert shown.nth(0).text_content().split(":")[0].split("(")[1].rstrip(")") in CLASSES
        # The CAM runs as a background job; the page polls it, then shows cam's picture.
        page.click("#cam-button")
        page.wait_for_selector("#cam[src^='blob:']", timeout=60_000)
        summary = client.json("/api/cam?model=0&image=1")
        assert page.locator("#cam-info").text_content().startswith(summary["method"] + " on " + summary["layer"])
        assert any(job["kind"] == "cam" and job["state"] == "done" for job in client.json("/api/jobs")["jobs"])
        watched.check()
    finally:
        watched.close()


@pytest.mark.slow
def test_trained_model_page_and_screenshot(browser):
    """On a trained VGG16: the list equals the API's, a clicked layer's filters and maps arrive; the README's
    picture. (Its ScoreCAM takes minutes on 2 cores: the CAM is checked on the tiny model, through the API.)"""
    path, entry = trained.model("vgg16_tumor")
    photos = trained.photos(entry)
    server = start([path], photos[:2])
    watched = Watched(browser, server, size=(1200, 760))
    page = watched.page
    try:
        page.wait_for_selector("#layers li[data-verdict]", timeout=120_000)
        assert page.locator("#layers li").count() == len(Client(server).json("/api/layers?model=0"))
        page.select_option("#image", "0")
        page.locator("#layers li").nth(3).click()
        page.wait_for_selector("#maps-info[data-shape]", timeout=60_000)
        page.wait_for_selector("#filters[src^='blob:']")
        page.click("#outputs-button")  # the whole model on the photo: its four classes, named from the metadata
        page.wait_for_selector("#outputs li")
        top = Client(server).json("/api/outputs?model=0&image=0")["outputs"][0]["top"]
        assert page.locator("#outputs li").nth(0).text_content().startswith(top[0]["label"] + ":")
        watched.check()
        target = os.environ.get("INSPECTOR_VIEW_SCREENSHOT")
        if target:
            page.screenshot(path=target)
    finally:
        watched.close()
        server.shutdown()
        server.server_close()
