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
        self._outputs_lock = threading.Lock()
        self._session = None
        self._outputs_session = None  # the whole model, built on the first request for its outputs
        self._feedings: dict[str, object] = {}
        # Keyed by (image id, preprocessing, size): diff may feed a model otherwise than the model alone.
        self._maps: OrderedDict[tuple, dict[str, np.ndarray]] = OrderedDict()
        self._single: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._outputs: OrderedDict[str, dict] = OrderedDict()
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

    def feeding(self, image: Image):
        """As `inspector maps MODEL IMAGE` resolves it for that photo (an upload: its bytes, as the file would be
        read: an open dim follows its aspect ratio); once per image."""
        if image.id not in self._feedings:
            self._feedings[image.id] = self.model.feeding(None, None, [image.source()], image.source())
        return self._feedings[image.id]

    def _batch(self, image: Image, feeding) -> np.ndarray:
        return self.model.image_batch([image.source()], feeding.preprocess, feeding.size)

    def maps(self, image: Image, feeding=None) -> dict[str, np.ndarray] | None:
        """Every layer's (C, H, W) maps of one image, from one run of the warm session (cached); None where
        they would need more than ``ALL_MAPS_BUDGET`` (then ``layer_maps`` runs the one layer asked for).
        ``feeding``: how to feed the model (default: as the model alone is fed; diff's pair feeding else)."""
        from ..resources import check_maps_memory

        with self._lock:
            feeding = feeding or self.feeding(image)
            key = (image.id, feeding.preprocess, tuple(feeding.size))
            if key in self._maps:
                self._maps.move_to_end(key)
                return self._maps[key]
            try:
                check_maps_memory(self.model, self.layers, feeding.size, ALL_MAPS_BUDGET)
            except InspectorError:
                return None
            if self._session is None:
                self._session = self.model.session(self.layers, device=self.device)
            maps = {name: value[0] for name, value in self._session.run(self._batch(image, feeding)).items()}
            self._maps[key] = maps
            while len(self._maps) > MAPS_CACHED:
                self._maps.popitem(last=False)
            return maps

    def layer_maps(self, index: int, image: Image, feeding=None) -> np.ndarray:
        layer = self.layer(index)
        maps = self.maps(image, feeding)
        if maps is None:  # a large model at a large size: this layer alone, from a session of its own
            from ..resources import DEFAULT_MAX_MEMORY, check_maps_memory

            with self._lock:
                feeding = feeding or self.feeding(image)
                key = (image.id, feeding.preprocess, tuple(feeding.size), index)
                if key not in self._single:
                    check_maps_memory(self.model, [layer], feeding.size, DEFAULT_MAX_MEMORY)
                    session = self.model.session([layer], device=self.device)
                    self._single[key] = session.run(self._batch(image, feeding))[layer.name][0]
                    while len(self._single) > SINGLE_MAPS_CACHED:
                        self._single.popitem(last=False)
                maps = {layer.name: self._single[key]}
        return np.ascontiguousarray(maps[layer.name], dtype=np.float32)

    # ----------------------------------------------------------- outputs

    def outputs(self, image: Image) -> dict:
        """The model's own outputs for the image, fed as `maps` feeds it: per output its shape, range and top
        classes (``top_outputs``). The whole model runs in a session of its own, built on the first call (the
        maps' session stops at the last conv layer: VGG16's dense layers are 8x its conv weights)."""
        with self._outputs_lock:
            if image.id not in self._outputs:
                feeding = self.feeding(image)
                if self._outputs_session is None:
                    self._outputs_session = self.model.session([], device=self.device, model_outputs=True)
                values = self._outputs_session.run_with_outputs(self._batch(image, feeding))[1]
                self._outputs[image.id] = top_outputs(values, self.model.class_names)
                while len(self._outputs) > MAPS_CACHED:
                    self._outputs.popitem(last=False)
            return self._outputs[image.id]

    # --------------------------------------------------------------- CAM

    def cam(self, image: Image, method: str | None = None, layer: int | None = None, target: str | None = None):
        """``inspector cam MODEL IMAGE [--method M] [--layer L] [--target T]``'s result (by default the method,
        layer and target it chooses); cached per image and choice."""
        from ..cam import compute
        from ..cam.methods import method as lookup
        from ..preprocess import load_image

        if method not in (None, "auto"):
            lookup(method)  # an unknown method: InspectorError before any work
        chosen = None if layer is None else self.layer(layer).name
        key = (image.id, method or "auto", chosen, target)
        with self._cam_lock:
            if key not in self._cams:
                if image.path is not None:
                    result = compute(self.model, image.path, method, chosen, target, device=self.device)
                else:  # the decoded upload, fed as the file would be
                    feeding = self.feeding(image)
                    pixels = load_image(image.source(), feeding.size, self.model.input.channels or 3)
                    result = compute(self.model, pixels, method, chosen, target, device=self.device,
                                     preprocess=feeding.preprocess, size=feeding.size)
                    result.image_name = image.name  # its picture's title, as cam titles the file
                self._cams[key] = result
                while len(self._cams) > MAPS_CACHED * 2:
                    self._cams.pop(next(iter(self._cams)))
            return self._cams[key]

    # ------------------------------------------------------------- audit

    def audit(self, paths: list[str]):
        """The audit of the command-line photos (weights alone where there are none), computed once (as
        `inspector audit MODEL PHOTOS` computes it)."""
        from ..audit import audit

        with self._audit_lock:
            if self._audit is None:
                # Not overlapped: the weights' statistics, then the images (the explorer minds its peak memory).
                self._audit = audit(self.model, paths or None, device=self.device, quiet=True, overlap=False)
            return self._audit


TOP = 5  # classes listed per output


def top_outputs(values: dict[str, np.ndarray], names: list[str] | None, count: int = TOP) -> list[dict]:
    """Per model output (first image of the batch): its shape, minimum and maximum, and its top classes where it
    has them, named as `inspector cam` names a target (``class 2 (glioma)``):

    - an (N, K) output: the K values, highest first;
    - an output whose axis 1 ends with one channel per class name (YOLOv8's (1, 4 + K, anchors)): each class's
      maximum over the rest, as `cam --target OUTPUT:NAME:max` scores it;
    - anything else (a detector's map, an OCR's sequence): no classes, only its range.
    """
    result = []
    for name, value in values.items():
        value = np.asarray(value)
        entry = {"name": name, "shape": list(value.shape), "kind": "values", "top": []}
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == np.bool_):  # strings: nothing to rank
            entry["min"] = entry["max"] = None
            result.append(entry)
            continue
        floats = np.asarray(value[:1], np.float64) if value.ndim and value.shape[0] else np.zeros(0)
        finite = floats[np.isfinite(floats)] if floats.size else floats
        entry["min"] = float(finite.min()) if finite.size else None
        entry["max"] = float(finite.max()) if finite.size else None
        scores, offset = None, 0
        if value.ndim == 2 and value.shape[0]:
            scores, entry["kind"] = floats[0], "classes"
        elif value.ndim >= 3 and value.shape[0] and names and len(names) <= value.shape[1]:
            offset = value.shape[1] - len(names)  # the class channels are the last len(names)
            scores = floats[0, offset:].reshape(len(names), -1).max(axis=1)
            entry["kind"] = "class maximum"
        if scores is not None:
            named = names if names and len(names) == len(scores) else None
            order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")[:count]
            entry["top"] = [{"index": int(i), "channel": int(i) + offset, "value": float(scores[i]),
                             "name": named[i] if named else None,
                             "label": f"class {int(i)}" + (f" ({named[i]})" if named else "")} for i in order]
        result.append(entry)
    return result


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
        from ..audit import collect_images
        from .jobs import Jobs
        from .pair import PairState

        files = []
        for path in images:
            if os.path.isdir(path):  # a folder: its images, as `audit` takes them
                found = [f for f in collect_images([path]) if isinstance(f, str)]
                if not found:
                    raise InspectorError(f"no images in the folder {path}")
                files += found
            elif os.path.isfile(path):
                files.append(path)
            else:
                raise InspectorError(f"image not found: {path}")
        self.models = [ModelState(i, path, device) for i, path in enumerate(models)]
        self.photos = [Image(str(i), os.path.basename(path), path=path) for i, path in enumerate(files)]
        self.uploads: OrderedDict[str, Image] = OrderedDict()
        self.pair = PairState(*self.models) if len(self.models) == 2 else None
        self.jobs = Jobs()
        self._count = 0
        self._lock = threading.Lock()

    def photo_paths(self) -> list[str]:
        return [image.path for image in self.photos]

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
        from ..cam.methods import METHODS

        return {"models": [{"index": m.index, "name": m.model.name, "layers": len(m.layers)} for m in self.models],
                "compare": self.pair is not None, "cam_methods": list(METHODS),
                "images": [{"id": image.id, "name": image.name} for image in self.images()],
                "max_upload": MAX_UPLOAD_BYTES}
