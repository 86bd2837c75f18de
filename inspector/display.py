"""Notebook display: results of the Python API that show themselves as pictures in Jupyter.

They stay what they are (a dict of arrays, an ndarray); ``_repr_png_`` draws them with
``inspector.render`` only when a notebook asks. Computing never depends on drawing.
"""

from __future__ import annotations

import io

import numpy as np


def _png(images) -> bytes | None:
    """PNG bytes of PIL images stacked vertically."""
    from PIL import Image

    images = [image for image in images if image is not None]
    if not images:
        return None
    width = max(image.size[0] for image in images)
    canvas = Image.new("RGB", (width, sum(image.size[1] for image in images)), (250, 250, 250))
    top = 0
    for image in images:
        canvas.paste(image, (0, top))
        top += image.size[1]
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", compress_level=6)
    return buffer.getvalue()


class FeatureMaps(dict):
    """``{layer name: (C, H, W) array}``, drawn as one grid per layer (at most 8 layers, 64 maps each) in Jupyter."""

    def __init__(self, values: dict, layers: list, model_name: str, image_name: str = "", untrained: bool = False):
        super().__init__(values)
        self._layers, self._model_name = list(layers), model_name
        self._image_name, self._untrained = image_name, untrained

    def _repr_png_(self) -> bytes | None:
        from .render import map_grid

        grids = []
        for layer in self._layers[:8]:
            value = self.get(layer.name)
            if isinstance(value, np.ndarray) and value.ndim == 3:
                grids.append(map_grid(value, layer, self._model_name, image_name=self._image_name,
                                      untrained=self._untrained).to_image(min_tile=64, max_tile=112))
        return _png(grids)


class Filters(np.ndarray):
    """A layer's weights (O, I, kH, kW); the array ``Model.filters`` returns draws itself in Jupyter.

    Arrays derived from it (slices, arithmetic) are plain to show: only the returned array knows its layer.
    """

    def __new__(cls, weights: np.ndarray, layer, model_name: str, bgr: bool = False, untrained: bool = False):
        array = np.asarray(weights).view(cls)
        array._display = (layer, model_name, bgr, untrained)
        return array

    def __array_finalize__(self, obj) -> None:
        self._display = None

    def _repr_png_(self) -> bytes | None:
        from .render import filter_grid

        if getattr(self, "_display", None) is None or self.ndim != 4:
            return None
        layer, model_name, bgr, untrained = self._display
        grid = filter_grid(np.asarray(self), layer, model_name, bgr=bgr, untrained=untrained)
        return _png([grid.to_image(min_tile=48, max_tile=96)])
