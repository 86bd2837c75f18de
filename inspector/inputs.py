"""How a model is fed: the ONE place that decides it, for every command.

``resolve(model, preprocess, size, images, image)`` returns a ``Feeding``: the preprocessing, the input size,
the layout, the batch (fixed or open) and the model's other inputs with the rule that fills them, each
with where it came from. Commands print ``Feeding.notes()`` on stderr and record ``Feeding.to_dict()``
in their JSON; every onnxruntime run builds its feeds with ``ModelInput.feeds`` (the image batch, a fixed
batch filled, the other inputs filled).

Sources, in the order they are tried:

- preprocessing: ``flag`` (--preprocess), ``metadata`` (our converters'), ``exporter`` (Ultralytics,
  PaddleOCR...), ``inferred`` (from the model and the images: ``inspector.infer_preprocess``), ``guessed``
  (ImageNet's torch preset, said on stderr, in the JSON and on the pictures);
- size: ``flag`` (--size), ``model`` (the input's fixed dims), ``metadata`` / ``exporter`` (the
  preprocessing's size), ``image`` (one dim fixed, the other from the image's aspect ratio), ``default``
  (224x224);
- layout: ``flag`` (--layout), ``metadata`` (``inspector.input_layout``), ``model`` (told from the dims
  and the graph).

Other inputs (not the image, not an initializer) are filled by rule where that is unambiguous, and
refused by name otherwise (only when a run needs them: ``maps`` of an early layer never does):

- a size input, named ``shape``, ``im_shape``, ``image_shape``, ``img_shape``, ``input_shape``,
  ``image_size``, ``img_size`` or ``im_size`` (any case), int or float, of shape [2] or [N, 2]: the fed
  image's (H, W); of shape [4] or [N, 4] (``shape``/``input_shape`` only): the fed batch's shape;
- a rescaling input, named ``scale_factor``, ``scale_factors``, ``im_scale``, ``scale`` or ``ratio``, float,
  of shape [1], [2], [N, 1] or [N, 2]: ones (inspector has already resized the image to the input: no
  further rescaling, so the model's boxes are in the input's pixels).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .errors import InspectorError

DEFAULT_SIZE = (224, 224)
PREPROCESS_SOURCES = ("flag", "metadata", "exporter", "inferred", "guessed")

_SIZE_NAMES = {"shape", "im_shape", "image_shape", "img_shape", "input_shape", "image_size", "img_size", "im_size"}
_SHAPE_NAMES = {"shape", "input_shape"}  # also the whole batch shape where they hold 4 values
_SCALE_NAMES = {"scale_factor", "scale_factors", "im_scale", "scale", "ratio"}
FILL_RULES = ("image size (H, W)", "input shape", "ones (no rescaling)")


# ------------------------------------------------------------------------- the model's inputs

@dataclass(frozen=True)
class OtherInput:
    """A graph input beside the image, with the rule that fills it (None: no rule fits)."""

    name: str
    shape: tuple  # declared dims: ints, or None/str where open
    dtype: np.dtype
    rule: str | None

    def describe(self) -> str:
        dims = ", ".join("?" if not isinstance(d, int) else str(d) for d in self.shape)
        return f"'{self.name}' [{dims}] {self.dtype}"

    def value(self, batch: np.ndarray, layout: str) -> np.ndarray:
        """The value for an image batch (in the model's layout) of ``len(batch)`` images."""
        height, width = batch.shape[2:4] if layout == "NCHW" else batch.shape[1:3]
        if self.rule == FILL_RULES[0]:
            row = [height, width]
        elif self.rule == FILL_RULES[1]:
            row = list(batch.shape)
        else:
            row = [1] * self.shape[-1]
        values = np.asarray(row, dtype=self.dtype)
        if len(self.shape) == 2:
            values = np.repeat(values[None], batch.shape[0] if not isinstance(self.shape[0], int) or
                               self.shape[0] == batch.shape[0] else self.shape[0], axis=0)
        return values


def _fill_rule(name: str, dims: tuple, dtype: np.dtype) -> str | None:
    if dtype.kind not in "iuf" or len(dims) not in (1, 2) or not isinstance(dims[-1], int):
        return None
    key = name.strip().lower()
    # Paddle writes 'im_shape', torch traces 'im_shape.1' or 'onnx::Shape_0': keep the name's last word part.
    key = re.sub(r"[.:]\d+$", "", key)
    width = dims[-1]
    if key in _SIZE_NAMES and width == 2:
        return FILL_RULES[0]
    if key in _SHAPE_NAMES and width == 4:
        return FILL_RULES[1]
    if key in _SCALE_NAMES and dtype.kind == "f" and width in (1, 2):
        return FILL_RULES[2]
    return None


@dataclass
class ModelInput:
    name: str
    shape: tuple  # ints, or None/str for dynamic dims
    layout: str  # "NCHW" | "NHWC"
    dtype: np.dtype
    others: tuple[OtherInput, ...] = ()
    layout_source: str = "model"  # flag | metadata | model

    @property
    def channels(self) -> int | None:
        dim = self.shape[1] if self.layout == "NCHW" else self.shape[3]
        return dim if isinstance(dim, int) else None

    @property
    def spatial(self) -> tuple[int | None, int | None]:
        h, w = (self.shape[2], self.shape[3]) if self.layout == "NCHW" else (self.shape[1], self.shape[2])
        return (h if isinstance(h, int) else None, w if isinstance(w, int) else None)

    @property
    def batch(self) -> int | None:
        return self.shape[0] if isinstance(self.shape[0], int) else None

    def filled(self, batch: np.ndarray) -> np.ndarray:
        """``batch`` padded to the model's fixed batch with copies of its last image (as is otherwise)."""
        fixed = self.batch
        if fixed is None or batch.shape[0] >= fixed:
            return batch
        return np.concatenate([batch, np.repeat(batch[-1:], fixed - batch.shape[0], axis=0)])

    def feeds(self, batch: np.ndarray, needed: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """onnxruntime's feeds for an image batch: the image (a fixed batch filled) and the other inputs
        that ``needed`` (the session's input names; default all of them) asks for, filled by their rule."""
        image = np.ascontiguousarray(self.filled(np.asarray(batch)), dtype=self.dtype)
        feeds = {self.name: image}
        wanted = [other for other in self.others if needed is None or other.name in needed]
        refused = [other for other in wanted if other.rule is None]
        if refused:
            raise InspectorError(
                "the model also takes " + ", ".join(other.describe() for other in refused)
                + ", which inspector cannot fill; it fills inputs named shape/im_shape/image_size ([2]: the "
                  "image's H, W) and scale_factor/scale ([1] or [2]: ones). Export the model with the image as "
                  "its only input, or give that input a default (an initializer)")
        for other in wanted:
            feeds[other.name] = other.value(image, self.layout)
        return feeds


def session_inputs(session) -> list[str]:
    return [i.name for i in session.get_inputs()]


def model_input(model, layout_hint: str | None = None, layout_source: str | None = None) -> ModelInput:
    """The image input of a model (its first 4-D graph input that is not an initializer) and its other inputs."""
    from onnx import helper

    graph = model.graph
    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if not inputs:
        raise InspectorError("the model has no inputs to feed an image to")
    described = [(entry, *_dims_and_dtype(entry, helper)) for entry in inputs]
    image = next((d for d in described if len(d[1]) == 4), described[0])
    first, dims, dtype = image
    if len(dims) != 4:
        raise InspectorError(
            f"model input '{first.name}' is {len(dims)}-D {tuple(dims)}; feature maps, audits and CAMs need a "
            "4-D image input (N, C, H, W) or (N, H, W, C); `inspector layers` and `inspector filters` read any "
            "model's convs")
    layout = (layout_hint or "").upper() or _guess_layout(dims, graph, first.name)
    if layout not in ("NCHW", "NHWC"):
        raise InspectorError(f"unknown layout '{layout_hint}': use nchw or nhwc")
    others = tuple(OtherInput(entry.name, tuple(d), t, _fill_rule(entry.name, tuple(d), t))
                   for entry, d, t in described if entry is not first)
    return ModelInput(first.name, tuple(dims), layout, dtype, others,
                      (layout_source or "flag") if layout_hint else "model")


def _dims_and_dtype(entry, helper) -> tuple[list, np.dtype]:
    tensor_type = entry.type.tensor_type
    dims = []
    for d in tensor_type.shape.dim:
        if d.HasField("dim_value") and d.dim_value > 0:
            dims.append(int(d.dim_value))
        else:
            dims.append(d.dim_param or None)
    try:
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type))
    except (KeyError, TypeError, ValueError):
        dtype = np.dtype(np.float32)
    return dims, dtype


def _guess_layout(dims, graph, name: str) -> str:
    c_first, c_last = dims[1], dims[3]
    small = (1, 3, 4)
    if c_first in small and c_last not in small:
        return "NCHW"
    if c_last in small and c_first not in small:
        return "NHWC"
    # Both open or both small: tf2onnx graphs start with a Transpose NHWC->NCHW.
    for node in graph.node:
        if name in node.input:
            if node.op_type == "Transpose":
                perm = next((tuple(a.ints) for a in node.attribute if a.name == "perm"), ())
                if perm == (0, 3, 1, 2):
                    return "NHWC"
            break
    return "NCHW"


# ------------------------------------------------------------------------------ the decisions

@dataclass
class Feeding:
    """How a model is fed for one command, and where each choice came from."""

    preprocess: object  # inspector.preprocess.Preprocess
    preprocess_source: str
    size: tuple[int, int]
    size_source: str
    input: ModelInput
    model_file: str = ""
    borrowed_from: str | None = None  # diff: the other model whose preprocessing this one runs with
    extra_notes: list[str] = field(default_factory=list)

    @property
    def layout(self) -> str:
        return self.input.layout

    @property
    def batch(self) -> int | None:
        return self.input.batch

    def notes(self) -> list[str]:
        """The lines a command prints on stderr: a guessed preprocessing, a fixed batch filled, inputs filled."""
        from .preprocess import GUESSED_PRESET

        lines = []
        name = os.path.basename(self.model_file)
        if self.preprocess_source == "guessed":
            lines.append(f"inspector: warning: {name} does not say how to preprocess images; guessed "
                         f"'{GUESSED_PRESET}' (RGB /255, ImageNet mean/std). Set it with --preprocess "
                         "(caffe, torch, tf, raw, bgr255, or 'order=BGR;scale=1;mean=0,0,0;std=1')")
        if self.preprocess_source == "inferred":
            lines.append(f"inspector: note: {name} does not say how to preprocess images; inferred "
                         f"'{self.preprocess.mode}' from the model ({self.preprocess.description}). Set it "
                         "with --preprocess to override")
        if self.batch is not None and self.batch > 1:
            lines.append(f"inspector: note: {name} has a fixed batch of {self.batch}; each run fills it with "
                         "copies of the last image, and only the real images' results are kept")
        filled = [o for o in self.input.others if o.rule is not None]
        if filled:
            lines.append(f"inspector: note: {name} also takes " + "; ".join(
                f"'{o.name}', fed with {o.rule}" for o in filled))
        return lines + self.extra_notes

    def to_dict(self) -> dict:
        return {
            "preprocess": self.preprocess.mode,
            "preprocess_source": self.preprocess_source,
            "preprocess_borrowed_from": self.borrowed_from,
            "size": list(self.size),
            "size_source": self.size_source,
            "layout": self.input.layout,
            "layout_source": self.input.layout_source,
            "batch": self.input.batch,  # None: open
            "other_inputs": [{"name": o.name, "rule": o.rule} for o in self.input.others],
        }


def resolve(model, preprocess=None, size: tuple[int, int] | None = None,
            images: Sequence | None = None, image=None) -> Feeding:
    """How ``model`` is fed: ``preprocess`` (the flag: a spec string or a Preprocess), ``size`` (--size),
    ``images`` (the command's image paths: what preprocessing inference may read), ``image`` (the one image
    of a one-image command: an open dim follows its aspect ratio)."""
    spec, source = resolve_preprocessing(model, preprocess, images)
    input_size, size_source = resolve_size(model, size, spec, source, image)
    return Feeding(spec, source, input_size, size_source, model.input, os.fspath(model.path))


def resolve_preprocessing(model, override=None, images: Sequence | None = None) -> tuple[object, str]:
    """(Preprocess, source): the flag's, else our metadata's, else an exporter's, else inferred, else guessed."""
    from .preprocess import GUESSED_PRESET, Preprocess, from_exporter, from_metadata, parse_preprocess, preset

    if isinstance(override, Preprocess):
        return override, "flag"
    if override:
        return parse_preprocess(override), "flag"
    spec = from_metadata(model.metadata)
    if spec is not None:
        return spec, "metadata"
    spec = from_exporter(model.metadata, model.file.model)
    if spec is not None:
        return spec, "exporter"
    if model.input.dtype.kind in "ui":
        # Integer pixels in: the preprocessing is inside the graph. A normalised guess cast to uint8 would
        # reach it as a handful of values (an onnxruntime-quantized SSCD saw 4), so the pixels go as they are.
        return Preprocess("pixels", "RGB", 1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), None,
                          f"it takes {model.input.dtype} pixels: fed as they are, RGB 0..255"), "inferred"
    spec = _inferred(model, images)
    if spec is not None:
        return spec, "inferred"
    return preset(GUESSED_PRESET), "guessed"


def _inferred(model, images) -> object | None:
    """Preprocessing inferred from the model and the images (paths, or (H, W, C) uint8 arrays; None where a
    command has none), tried before the guess (``inspector.infer_preprocess``); its reason rides in the
    preset's ``description``, which ``Feeding.notes`` prints. None where the model cannot tell."""
    if not images:
        return None
    from dataclasses import replace

    from .infer_preprocess import infer

    key = tuple(os.fspath(i) for i in images) if all(isinstance(i, (str, os.PathLike)) for i in images) else None
    cache = model.__dict__.setdefault("_inferred_preprocess", {})  # a command resolves for its notes, then to run
    if key is None or key not in cache:
        found = infer(model, list(images))
        spec = None if found is None else replace(found[0], description=found[1])
        if key is None:
            return spec
        cache[key] = spec
    return cache[key]


def resolve_size(model, size, spec, source: str, image=None) -> tuple[tuple[int, int], str]:
    """((H, W), source) to run at: fixed dims, else ``size``, else the preprocessing's size, else 224x224.

    Where one spatial dim is known (a text-line model: height fixed, width open) and an image is
    given, the other keeps the image's aspect ratio (a multiple of 8) instead of squashing it.
    Refused when not positive or over the image pixel limit, wherever it came from: a model's
    metadata (Ultralytics ``imgsz``, ``inspector.preprocess``) is untrusted, and every command
    allocates its input batch at this size before any image is read.
    """
    from .preprocess import MAX_IMAGE_PIXELS

    (height, width), where = _size(model, size, spec, source, image)
    if height <= 0 or width <= 0 or height * width > MAX_IMAGE_PIXELS:
        label = {"model": "the model's input shape", "flag": "--size"}.get(where, "the model's preprocessing metadata")
        what = ("is not positive" if height <= 0 or width <= 0
                else f"is too large (over {MAX_IMAGE_PIXELS:,} pixels)")
        todo = "check the model's input shape" if where == "model" else "pass --size HxW"
        raise InspectorError(f"input size {height}x{width} (from {label}) {what}; {todo}")
    return (height, width), where


def _size(model, size, spec, source, image) -> tuple[tuple[int, int], str]:
    fixed_h, fixed_w = model.input.spatial
    if fixed_h and fixed_w:
        if size and tuple(size) != (fixed_h, fixed_w):
            raise InspectorError(
                f"--size {size[0]}x{size[1]} does not fit: the model's input is fixed at {fixed_h}x{fixed_w}")
        return (fixed_h, fixed_w), "model"
    if size:
        return tuple(size), "flag"
    known_h, known_w = fixed_h, fixed_w
    if spec is not None and spec.input_size:  # the preprocessing's size fills what the model leaves open
        known_h = known_h or (spec.input_size[0] or None)
        known_w = known_w or (spec.input_size[1] or None)
    if known_h and known_w:  # at least one of them from the preprocessing (both fixed returned above)
        return (known_h, known_w), source if source in ("metadata", "exporter", "inferred") else "metadata"
    if (known_h or known_w) and image is not None and not isinstance(image, np.ndarray):
        from .preprocess import image_size

        image_h, image_w = image_size(image)
        if known_h:
            return (known_h, _multiple_of_8(known_h * image_w / max(1, image_h))), "image"
        return (_multiple_of_8(known_w * image_h / max(1, image_w)), known_w), "image"
    return (known_h or DEFAULT_SIZE[0], known_w or DEFAULT_SIZE[1]), "default"


def _multiple_of_8(value: float) -> int:
    """The nearest multiple of 8 (at least 8, at most 4096): strided convs divide it evenly."""
    return int(min(4096, max(8, round(value / 8) * 8)))


def resolve_pair(model_a, model_b, preprocess=None, size=None, images=None) -> tuple[Feeding, Feeding]:
    """``diff``'s two models: each its own preprocessing; one that can only guess runs with the other's
    (a quantized or re-exported copy often loses the metadata); --preprocess sets both. One size for both."""
    spec_a, source_a = resolve_preprocessing(model_a, preprocess, images)
    spec_b, source_b = resolve_preprocessing(model_b, preprocess, images)
    borrowed = {"a": None, "b": None}
    if source_a == "guessed" and source_b != "guessed":
        spec_a, source_a, borrowed["a"] = spec_b, source_b, "b"
    elif source_b == "guessed" and source_a != "guessed":
        spec_b, source_b, borrowed["b"] = spec_a, source_a, "a"
    size_a, where_a = resolve_size(model_a, size, spec_a, source_a)
    try:
        size_b, where_b = resolve_size(model_b, size_a, spec_b, source_b)
    except InspectorError:
        size_b, where_b = resolve_size(model_b, None, spec_b, source_b)
    if tuple(size_a) != tuple(size_b):
        raise InspectorError(f"the two models take different input sizes ({size_a[0]}x{size_a[1]} and "
                             f"{size_b[0]}x{size_b[1]}); diff compares them on the same images at one size")
    feeding_a = Feeding(spec_a, source_a, size_a, where_a, model_a.input, os.fspath(model_a.path), borrowed["a"])
    feeding_b = Feeding(spec_b, source_b, size_b, where_b if where_b != "flag" else where_a, model_b.input,
                        os.fspath(model_b.path), borrowed["b"])
    if borrowed["b"] or borrowed["a"]:
        which, other = ("B", "A") if borrowed["b"] else ("A", "B")
        taken = feeding_b if borrowed["b"] else feeding_a
        taken.extra_notes.append(f"inspector: note: model {which} does not say how to preprocess images; it runs "
                                 f"with model {other}'s ({taken.preprocess.mode}, from its {taken.preprocess_source})")
    return feeding_a, feeding_b
