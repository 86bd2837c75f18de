"""The Python API under the CLI: ``inspector.load(path)`` and what a Model can do.

Everything returns plain NumPy arrays keyed by layer name; pictures are made
separately (``inspector.render``) from these arrays.
"""

from __future__ import annotations

import os
from typing import Iterable, Sequence

import numpy as np

from . import metadata as md
from .errors import InspectorError
from .execution import FeatureMapSession
from .inputs import DEFAULT_SIZE, Feeding, ModelInput, model_input, resolve_preprocessing, resolve_size
from .graph import Graph, Layer
from .onnxfile import OnnxFile
from .preprocess import Preprocess, class_names, load_image


def load(path: str | os.PathLike, layout: str | None = None) -> "Model":
    """Open an ONNX model (weights stay on disk until asked for)."""
    return Model(path, layout=layout)


class Model:
    def __init__(self, path: str | os.PathLike, layout: str | None = None):
        self.file = OnnxFile(path)
        self.path = self.file.path
        self.graph = Graph(self.file)
        # Entries that are not valid UTF-8 (protobuf gives bytes) say nothing we could read: skipped.
        self.metadata: dict[str, str] = {p.key: p.value for p in self.file.model.metadata_props
                                         if isinstance(p.key, str) and isinstance(p.value, str)}
        self._layout_hint = layout or self.metadata.get(md.INPUT_LAYOUT)
        self._layout_source = "flag" if layout else "metadata"
        self._input: ModelInput | None = None

    # ------------------------------------------------------------ structure

    @property
    def name(self) -> str:
        return self.metadata.get(md.MODEL_NAME) or os.path.splitext(os.path.basename(self.path))[0]

    @property
    def layers(self) -> list[Layer]:
        return self.graph.layers

    @property
    def untrained(self) -> bool:
        return md.weights_untrained(self.metadata)

    def require_layers(self) -> list[Layer]:
        if not self.layers:
            nested = _convs_in_subgraphs(self.file.model.graph)
            where = (f"; its {nested} conv(s) sit inside If/Loop/Scan branches, which inspector does not enter"
                     if nested else "")
            raise InspectorError(
                f"no conv layers in {os.path.basename(self.path)} (looked for "
                f"Conv, ConvTranspose, QLinearConv and DequantizeLinear-fed Conv nodes){where}")
        return self.layers

    def layer(self, selector: str | int) -> Layer:
        self.require_layers()
        return self.graph.select(selector)

    def select(self, selectors: Sequence[str | int] | None = None, all_layers: bool = False) -> list[Layer]:
        """Layers for a command: all, the given ones (graph order, no repeats), or the first."""
        layers = self.require_layers()
        if all_layers:
            return list(layers)
        if not selectors:
            return [layers[0]]
        chosen = {self.graph.select(s).index: None for s in selectors}
        return [layers[i] for i in sorted(chosen)]

    @property
    def input(self) -> ModelInput:
        if self._input is None:
            self._input = model_input(self.file.model, self._layout_hint, self._layout_source)
        return self._input

    # -------------------------------------------------------------- filters

    def filters(self, selector: str | int | Layer) -> np.ndarray:
        """Weights of one layer as (filters, in_channels_per_group, kH, kW), float32.

        Conv weights are already filters-first in ONNX; ConvTranspose weights
        (C_in, C_out/groups, kH, kW) are regrouped so that index 0 is again
        the output channel. 1-D convs get a height of 1. In Jupyter the array shows itself as the grid.
        """
        from .display import Filters

        layer = selector if isinstance(selector, Layer) else self.layer(selector)
        spec = md.json_value(self.metadata, md.PREPROCESS)
        bgr = isinstance(spec, dict) and str(spec.get("color_order", "RGB")).upper() == "BGR"
        return Filters(self.filters_and_bias(layer)[0], layer, self.name, bgr, self.untrained)

    def filters_and_bias(self, selector) -> tuple[np.ndarray, np.ndarray | None]:
        layer = selector if isinstance(selector, Layer) else self.layer(selector)
        weights, bias = self.graph.weights(layer)
        if weights.ndim == 3:
            weights = weights[:, :, None, :]
        if weights.ndim != 4:
            raise InspectorError(
                f"layer '{layer.name}' has {weights.ndim}-D weights {weights.shape}; "
                "only 1-D and 2-D convolutions can be drawn")
        if layer.op == "ConvTranspose":
            c_in, c_out_g, kh, kw = weights.shape
            g = layer.groups
            if c_in % g:
                raise InspectorError(f"layer '{layer.name}' is inconsistent: {c_in} input channels "
                                     f"do not split into {g} groups; re-export the model")
            weights = (weights.reshape(g, c_in // g, c_out_g, kh, kw)
                       .transpose(0, 2, 1, 3, 4).reshape(g * c_out_g, c_in // g, kh, kw))
        return np.ascontiguousarray(weights, dtype=np.float32), bias

    # ------------------------------------------------------- preprocessing

    def feeding(self, preprocess=None, size: tuple[int, int] | None = None, images=None, image=None):
        """How this model is fed (``inspector.inputs.Feeding``): preprocessing, size, layout, batch and other
        inputs, each with its source. Every command asks this, once. ``images``: the command's image paths
        (for preprocessing inferred from them); ``image``: a one-image command's (an open dim follows it)."""
        from .inputs import resolve

        return resolve(self, preprocess, size, images, image)

    def preprocessing(self, override: str | Preprocess | None = None) -> Preprocess:
        """The preprocessing to run with: the flag's, else what the file says, else a disclosed guess
        (``preprocess_source`` says which)."""
        return resolve_preprocessing(self, override)[0]

    def preprocess_source(self, override: str | Preprocess | None = None) -> str:
        """``flag``, ``metadata`` (our converters'), ``exporter`` (Ultralytics, PaddleOCR...), ``inferred`` or
        ``guessed``."""
        return resolve_preprocessing(self, override)[1]

    def guessed_preprocessing_note(self, override=None) -> str | None:
        """The line every command prints on stderr when the preprocessing was guessed, else None."""
        spec, source = resolve_preprocessing(self, override)
        if source != "guessed":
            return None
        return Feeding(spec, source, DEFAULT_SIZE, "default", self.input, os.fspath(self.path)).notes()[0]

    @property
    def class_names(self) -> list[str] | None:
        """Class names from the file's metadata (our converters', Ultralytics' ``names``), or None."""
        return class_names(self.metadata)

    def input_size(self, size: tuple[int, int] | None = None, spec: Preprocess | None = None,
                   image: str | os.PathLike | None = None) -> tuple[int, int]:
        """(H, W) to run at (``inspector.inputs.resolve_size``): fixed dims, else ``size``, else the
        preprocessing's size, else 224x224; one open dim follows ``image``'s aspect ratio."""
        return resolve_size(self, size, spec, "metadata", image)[0]

    def image_batch(self, images: Iterable[str | os.PathLike | np.ndarray], preprocess=None,
                    size: tuple[int, int] | None = None) -> np.ndarray:
        """Preprocessed images stacked in the model's own layout and dtype."""
        spec = self.preprocessing(preprocess)
        images = list(images)
        first = images[0] if len(images) == 1 else None
        height, width = self.input_size(size, spec, image=first)
        channels = self.input.channels or 3
        if channels not in (1, 3):
            raise InspectorError(f"model input takes {channels} channels; only 1 (gray) or 3 (colour) images can be fed")
        arrays = []
        for image in images:
            pixels = image if isinstance(image, np.ndarray) else load_image(image, (height, width), channels)
            x = spec.apply(pixels)
            arrays.append(x.transpose(2, 0, 1) if self.input.layout == "NCHW" else x)
        return np.stack(arrays).astype(self.input.dtype, copy=False)

    def feeds(self, batch: np.ndarray, needed=None) -> dict[str, np.ndarray]:
        """onnxruntime's feeds for an image batch: a fixed batch filled, the other inputs filled by rule."""
        return self.input.feeds(batch, needed)

    # ------------------------------------------------------------ execution

    def session(self, layers: Sequence[Layer] | None = None, device: str = "auto",
                verbose: bool = False, model_outputs: bool = False) -> FeatureMapSession:
        """A session returning these layers' maps; ``model_outputs=True`` also returns the model's outputs
        (``session.run_with_outputs``), for commands that need class scores or detections."""
        layers = list(layers) if layers is not None else self.require_layers()
        return FeatureMapSession(self.file, layers, self.input, device, verbose, self._dequantizers(layers),
                                 model_outputs)

    def run(self, batch: np.ndarray, layers: Sequence[str | int | Layer] | None = None,
            device: str = "auto") -> dict[str, np.ndarray]:
        """Feature maps (N, C, H, W) of already-preprocessed inputs in the model's layout."""
        chosen = self._as_layers(layers)
        return self.session(chosen, device).run(batch)

    def maps(self, image: str | os.PathLike | np.ndarray, layers: Sequence[str | int | Layer] | None = None,
             preprocess=None, size: tuple[int, int] | None = None, device: str = "auto") -> dict[str, np.ndarray]:
        """Feature maps (C, H, W) of one image for the given layers (default: all); a dict that Jupyter shows as grids."""
        from .display import FeatureMaps

        chosen = self._as_layers(layers)
        batch = self.image_batch([image], preprocess, size)
        maps = {name: value[0] for name, value in self.session(chosen, device).run(batch).items()}
        name = "" if isinstance(image, np.ndarray) else os.path.basename(os.fspath(image))
        return FeatureMaps(maps, chosen, self.name, name, self.untrained)

    def cam(self, image: str | os.PathLike | np.ndarray, method: str | None = None, layer: str | int | None = None,
            target: str | int | None = None, **options):
        """Class activation map of one image (``inspector.cam.compute``): ``.cam`` is (H, W) in [0, 1];
        Jupyter shows the photo and the heatmap over it. Options: batch, preprocess, size, device."""
        from .cam import compute

        return compute(self, image, method, layer, target, **options)

    def _as_layers(self, layers) -> list[Layer]:
        if layers is None:
            return list(self.require_layers())
        return [layer if isinstance(layer, Layer) else self.layer(layer) for layer in layers]

    def _dequantizers(self, layers: Sequence[Layer]) -> dict:
        out = {}
        for layer in layers:
            if layer.op == "QLinearConv" and layer.output == layer.conv_output:
                node = self.graph.nodes[layer.node_index]
                scale = np.float32(self.graph.constant(node.input[6]))
                zero = np.float32(self.graph.constant(node.input[7])) if node.input[7] else np.float32(0)
                out[layer.name] = (scale, zero)
        return out


def _convs_in_subgraphs(graph) -> int:
    """Conv-like nodes inside the branches and bodies of control-flow nodes (silero-vad's exports)."""
    count = 0
    for node in graph.node:
        for attribute in node.attribute:
            for sub in [attribute.g] if attribute.HasField("g") else list(attribute.graphs):
                count += sum(n.op_type in ("Conv", "ConvTranspose", "QLinearConv") for n in sub.node)
                count += _convs_in_subgraphs(sub)
    return count
