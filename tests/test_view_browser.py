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
from view_helpers import HOSTILE, Client, hostile_model, start

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
        watched.check()
        target = os.environ.get("INSPECTOR_VIEW_SCREENSHOT")
        if target:
            page.screenshot(path=target)
    finally:
        watched.close()
        server.shutdown()
        server.server_close()
