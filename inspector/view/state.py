"""What the explorer serves, computed through the library and cached: one warm session per model.

No path from the client reaches this module: models and photos are fixed on the command line and named by
index; uploads are bytes held in memory, decoded by ``inspector.preprocess.load_image`` (bomb limits).
"""

from __future__ import annotations

import io
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from ..errors import InspectorError

MAX_UPLOAD_BYTES = 16 * 1024 * 1024  # one photo; larger uploads are refused with 413
MAX_UPLOADS = 16  # the oldest upload is forgotten beyond this
MAPS_CACHED = 3  # images whose maps (every layer) stay in memory per model
ALL_MAPS_BUDGET = 1024**3  # one image's maps of every layer, at most (estimated from the graph's shapes)
SINGLE_MAPS_CACHED = 8  # layers' maps kept where all of them would not fit the budget


@dataclass
class Image:
    id: str
    name: str  # shown as text only
    path: str | None = None  # a command-line photo
    data: bytes | None = None  # an upload, in memory

    def source(self):
        return self.path if self.path is not None else io.BytesIO(self.data)


class ModelState:
    """One model: its layers, filters, a warm session over every layer, maps cached per image, CAM, audit."""

    def __init__(self, index: int, path: str, device: str = "auto"):
        from ..api import load

        self.index = index
        self.model = load(path)
        self.layers = self.model.require_layers()
        self.device = device
        # One lock per kind of work: a long CAM or audit never holds up a layer click.
        self._lock = threading.Lock()
        self._cam_lock = threading.Lock()
        self._audit_lock = threading.Lock()
        self._session = None
        self._maps: OrderedDict[str, dict[str, np.ndarray]] = OrderedDict()
        self._single: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._filters_png: dict[int, bytes] = {}
        self._cams: dict[str, object] = {}
        self._audit = None

    def layer(self, index: int):
        if not 0 <= index < len(self.layers):
            raise KeyError(index)
        return self.layers[index]

    def layers_json(self) -> list[dict]:
        return [layer.to_dict() for layer in self.layers]

    # ----------------------------------------------------------- filters

    def filters_png(self, index: int) -> bytes:
        from ..render import filter_grid, png_bytes

        layer = self.layer(index)
        with self._lock:
            if index not in self._filters_png:
                weights = self.model.filters(layer)
                grid = filter_grid(np.asarray(weights), layer, self.model.name, untrained=self.model.untrained)
                image = grid.to_image(min_tile=48, max_tile=96)
                self._filters_png[index] = png_bytes(np.asarray(image))
            return self._filters_png[index]

    def filters_raw(self, index: int) -> np.ndarray:
        return np.asarray(self.model.filters(self.layer(index)), dtype=np.float32)

    # -------------------------------------------------------------- maps

    def _feeding(self, image: Image):
        # As `inspector maps MODEL IMAGE` resolves it for a photo; an upload has no path to read.
        if image.path is not None:
            return self.model.feeding(None, None, [image.path], image.path)
        return self.model.feeding(None, None, None, None)

    def maps(self, image: Image) -> dict[str, np.ndarray] | None:
        """Every layer's (C, H, W) maps of one image, from one run of the warm session (cached); None where
        they would need more than ``ALL_MAPS_BUDGET`` (then ``layer_maps`` runs the one layer asked for)."""
        from ..resources import check_maps_memory

        with self._lock:
            if image.id in self._maps:
                self._maps.move_to_end(image.id)
                return self._maps[image.id]
            feeding = self._feeding(image)
            try:
                check_maps_memory(self.model, self.layers, feeding.size, ALL_MAPS_BUDGET)
            except InspectorError:
                return None
            if self._session is None:
                self._session = self.model.session(self.layers, device=self.device)
            batch = self.model.image_batch([image.source()], feeding.preprocess, feeding.size)
            maps = {name: value[0] for name, value in self._session.run(batch).items()}
            self._maps[image.id] = maps
            while len(self._maps) > MAPS_CACHED:
                self._maps.popitem(last=False)
            return maps

    def layer_maps(self, index: int, image: Image) -> np.ndarray:
        layer = self.layer(index)
        maps = self.maps(image)
        if maps is None:  # a large model at a large size: this layer alone, from a session of its own
            from ..resources import DEFAULT_MAX_MEMORY, check_maps_memory

            with self._lock:
                key = (image.id, index)
                if key not in self._single:
                    feeding = self._feeding(image)
                    check_maps_memory(self.model, [layer], feeding.size, DEFAULT_MAX_MEMORY)
                    batch = self.model.image_batch([image.source()], feeding.preprocess, feeding.size)
                    session = self.model.session([layer], device=self.device)
                    self._single[key] = session.run(batch)[layer.name][0]
                    while len(self._single) > SINGLE_MAPS_CACHED:
                        self._single.popitem(last=False)
                maps = {layer.name: self._single[key]}
        return np.ascontiguousarray(maps[layer.name], dtype=np.float32)

    # --------------------------------------------------------------- CAM

    def cam(self, image: Image):
        """``inspector cam MODEL IMAGE``'s result: the method and target it chooses by default."""
        from ..cam import compute
        from ..preprocess import load_image

        with self._cam_lock:
            if image.id not in self._cams:
                if image.path is not None:
                    source = image.path
                else:
                    feeding = self._feeding(image)
                    source = load_image(image.source(), feeding.size, 3)
                self._cams[image.id] = compute(self.model, source, None, device=self.device)
            return self._cams[image.id]

    # ------------------------------------------------------------- audit

    def audit(self, paths: list[str]):
        """The audit of the command-line photos (weights alone where there are none), computed once."""
        from ..audit import audit

        with self._audit_lock:
            if self._audit is None:
                self._audit = audit(self.model, paths or None, device=self.device, quiet=True)
            return self._audit


def verdict(layer_dict: dict) -> str:
    """The colour of a layer in the list: dead (dead filters, or dead channels the audit judged), warn (near-duplicate or
    weak filters, channels not confirmed), ok."""
    dead = set(layer_dict.get("dead_filters") or [])
    if layer_dict.get("channels_judged"):  # as the audit counts them: judged channels, less those not confirmed
        dead |= set(layer_dict.get("dead_channels") or []) - set(layer_dict.get("not_confirmed_channels") or [])
    if dead:
        return "dead"
    if (layer_dict.get("near_duplicates") or {}).get("pairs") or layer_dict.get("weak_filters") \
            or layer_dict.get("effectively_zero_filters") or layer_dict.get("collapse"):
        return "warn"
    return "ok"


class Explorer:
    """The models and images of one `inspector view`."""

    def __init__(self, models: list[str], images: list[str], device: str = "auto"):
        for path in images:
            if not os.path.isfile(path):
                raise InspectorError(f"image not found: {path}")
        self.models = [ModelState(i, path, device) for i, path in enumerate(models)]
        self.photos = [Image(str(i), os.path.basename(path), path=path) for i, path in enumerate(images)]
        self.uploads: OrderedDict[str, Image] = OrderedDict()
        self._count = 0
        self._lock = threading.Lock()

    def images(self) -> list[Image]:
        return self.photos + list(self.uploads.values())

    def image(self, image_id: str) -> Image:
        for image in self.images():
            if image.id == image_id:
                return image
        raise KeyError(image_id)

    def upload(self, data: bytes, name: str) -> Image:
        """Keep an uploaded image in memory after checking that it decodes (bomb limits)."""
        from ..preprocess import load_image

        load_image(io.BytesIO(data), (8, 8), 3)  # InspectorError when not an image, a bomb, truncated
        with self._lock:
            self._count += 1
            image = Image(f"u{self._count}", name[:200], data=data)
            self.uploads[image.id] = image
            while len(self.uploads) > MAX_UPLOADS:
                self.uploads.popitem(last=False)
            return image

    def info(self) -> dict:
        return {"models": [{"index": m.index, "name": m.model.name, "layers": len(m.layers)} for m in self.models],
                "images": [{"id": image.id, "name": image.name} for image in self.images()],
                "max_upload": MAX_UPLOAD_BYTES}
