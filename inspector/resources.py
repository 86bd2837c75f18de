"""How much memory a ``maps`` run will need, known before onnxruntime allocates any of it.

The feature maps of every selected layer come back from ONE run, so they are
all in memory together. Their shapes come from ONNX shape inference on the
light model (no weight is read) with the input fixed at the size actually
fed; float32 maps take 4 bytes per value. When the total passes the limit
the run is refused with a message saying how to get under it.
"""

from __future__ import annotations

import re

from .errors import InspectorError

DEFAULT_MAX_MEMORY = 4 * 1024**3  # 4 GiB
BYTES_PER_VALUE = 4  # maps are returned as float32

_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """'8G', '512M', '1.5GB', '4GiB' or a plain number of bytes -> bytes (binary units)."""
    match = _SIZE.match(str(text))
    if not match:
        raise ValueError(f"'{text}' is not a memory size; use e.g. 8G, 512M or 2GB")
    value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if value < 1:
        raise ValueError(f"memory size '{text}' must be at least 1 byte")
    return int(value)


def human(nbytes: float) -> str:
    for unit, size in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if nbytes >= size:
            return f"{nbytes / size:.1f} {unit}"
    return f"{int(nbytes)} B"


def layer_map_shapes(onnx_model, layers, input_name: str, input_shape: tuple[int, ...]) -> dict[str, tuple | None]:
    """{layer name: inferred shape of the tensor shown, or None where inference could not tell}."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(onnx_model)
    del model.graph.value_info[:]
    for graph_input in model.graph.input:
        if graph_input.name == input_name:
            dims = graph_input.type.tensor_type.shape.dim
            del dims[:]
            for size in input_shape:
                dims.add().dim_value = int(size)
    try:
        inferred = onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False)
    except Exception:  # noqa: BLE001 - a model shape inference cannot follow: no estimate, no refusal
        return {layer.name: None for layer in layers}
    known = {}
    for info in (*inferred.graph.value_info, *inferred.graph.output):
        shape = info.type.tensor_type.shape
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in shape.dim]
        known[info.name] = tuple(dims) if dims and None not in dims else None
    return {layer.name: known.get(layer.output) for layer in layers}


def map_bytes(shape: tuple | None) -> int | None:
    if shape is None:
        return None
    total = BYTES_PER_VALUE
    for dim in shape:
        total *= int(dim)
    return total


def layer_map_bytes(model, layers, size: tuple[int, int]) -> dict[str, int]:
    """{layer name: estimated bytes of its map for one image of ``size`` (H, W)}; 0 where shape inference
    cannot tell (an estimate that is a floor)."""
    model_input = model.input
    channels = model_input.channels or 3
    height, width = size
    shape = (1, channels, height, width) if model_input.layout == "NCHW" else (1, height, width, channels)
    shapes = layer_map_shapes(model.file.model, layers, model_input.name, shape)
    return {name: map_bytes(shape) or 0 for name, shape in shapes.items()}


def check_maps_memory(model, layers, size: tuple[int, int], limit: int = DEFAULT_MAX_MEMORY) -> int:
    """Estimated bytes of the selected layers' maps for one image of ``size`` (H, W).

    ``model`` is an ``inspector.api.Model``. Raises InspectorError when the
    estimate is over ``limit``. Layers whose shapes shape inference cannot
    tell count as zero: the estimate is a floor, and onnxruntime's own
    working memory comes on top.
    """
    sizes = layer_map_bytes(model, layers, size)
    total = sum(sizes.values())
    if total > limit:
        largest = sorted(sizes.items(), key=lambda item: -item[1])[:3]
        named = ", ".join(f"{name} {human(size)}" for name, size in largest)
        raise InspectorError(
            f"the feature maps of {len(layers)} layer(s) would need about {human(total)} of memory, over the "
            f"--max-memory limit of {human(limit)} (largest: {named}); select fewer layers with --layer, "
            f"or raise the limit, e.g. --max-memory {_suggest(total)}")
    return total


def _suggest(total: int) -> str:
    if total >= 1024**3:
        return f"{-(-total // 1024**3)}G"
    return f"{-(-total // 1024**2)}M"
