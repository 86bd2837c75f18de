"""The pipeline every CAM method shares: the target layer's maps and the model's outputs from one run,
the target, the method's hook, ReLU, upsampling to the input, min-max scaling.

Batched forward runs (ScoreCAM's masked inputs, AblationCAM's ablated maps) go through ``Run``:
a dynamic batch dimension takes ``batch`` inputs per run; a fixed one is respected (the last batch
padded); a model whose batch dimension is declared open but cannot take more than one input (a
Reshape to batch 1 inside) falls back to one input per run.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field

import numpy as np

from ..errors import InspectorError
from . import cut as cutting
from . import targets as tg
from .methods import method as lookup
from .resize import min_max, upsample

DEFAULT_BATCH = 16


@dataclass
class CamResult:
    """A class activation map and what it explains. ``cam``: (H, W) float32 in [0, 1] at the model's input size."""

    cam: np.ndarray
    low_res: np.ndarray  # (h, w) at the layer's resolution, after ReLU, before scaling
    method: str
    layer: str
    layer_shape: tuple[int, int, int]  # (C, h, w)
    target: int  # class index, -1 where the method has none (EigenCAM, a reduced output)
    target_label: str  # "" where there is none
    score: float | None  # the target's score on the photo
    weights: np.ndarray | None  # (C,) channel weights (None for EigenCAM)
    photo: np.ndarray  # (H, W, 3) uint8: the photo as the model saw it (resized)
    model_name: str
    image_name: str = ""
    provider: str = ""
    runs: int = 0  # inputs run after the first run (masked inputs, ablated maps)
    untrained: bool = False
    notes: list[str] = field(default_factory=list)
    method_source: str = "flag"  # flag | chosen (fits the model's outputs: see choose_method)
    feeding: dict = field(default_factory=dict)  # how the model was fed (inspector.inputs.Feeding.to_dict)

    def to_dict(self) -> dict:
        return {"model": self.model_name, "image": self.image_name, "method": self.method, "layer": self.layer,
                "layer_shape": list(self.layer_shape), "target": self.target, "target_label": self.target_label,
                "score": self.score, "input_size": list(self.cam.shape), "runs": self.runs,
                "provider": self.provider, "notes": list(self.notes), "method_source": self.method_source,
                "input": dict(self.feeding)}

    def to_image(self):
        """The picture the CLI writes: the photo, and the heatmap over it, with a title (a PIL image)."""
        from .picture import draw

        return draw(self)

    def _repr_png_(self) -> bytes:  # Jupyter shows the picture
        from .picture import png_bytes

        return png_bytes(self.to_image())


def spatial(height: int, width: int, size: tuple[int, int]) -> bool:
    """Maps that lie over the image: larger than 1x1, with the input's proportions within a factor of 2
    (a detector's DFL conv over (4, 21504) anchors is not an image)."""
    if height * width <= 1:
        return False
    ratio = (height / width) / (size[0] / size[1])
    return 0.5 <= ratio <= 2.0


def default_layer(model, size: tuple[int, int]):
    """The last conv layer whose maps are still spatial (see ``spatial``), from shape inference."""
    from ..resources import layer_map_shapes

    layers = model.require_layers()
    channels = model.input.channels or 3
    shape = (1, channels, *size) if model.input.layout == "NCHW" else (1, *size, channels)
    shapes = layer_map_shapes(model.file.model, layers, model.input.name, shape)
    for layer in reversed(layers):
        found = shapes.get(layer.name)
        if found is None:
            return layer  # inference could not tell: try it (the run checks)
        if len(found) != 4:
            continue
        first = tuple(found[i] for i in np.argsort(layer.output_perm)) if layer.output_perm else found
        if spatial(first[2], first[3], size):
            return layer
    raise InspectorError("no conv layer of this model has maps that lie over the image (larger than 1x1, in the "
                         "input's proportions) at this input size; choose one with --layer, or try a larger --size")


class Run:
    """One CAM computation's state: the session, the first run's values, batching."""

    def __init__(self, model, layer, batch_input, input_size, batch, device, verbose, quiet, extra_outputs):
        from .. import execution as ex

        self.model, self.layer, self.batch, self.input_size = model, layer, batch_input, input_size
        self.batch_size, self.device, self.verbose, self.quiet = max(1, int(batch)), device, verbose, quiet
        self.fixed = model.input.batch
        self.one_by_one = False
        self.runs = 0
        self.weights = self.channel_scores = None
        self.target: tg.Target | None = None
        ex.check_opsets(model.file.model)
        self.outputs = list(dict.fromkeys([layer.output, *extra_outputs]))
        light = ex.add_outputs(model.file.model, self.outputs)
        self.relayout = ex.conv_kernel_bytes(model.file) <= ex.RELAYOUT_LIMIT
        self.session, self.provider = ex.create_session(model.file.serialized(light), model.file.folder, device,
                                                        verbose, self.relayout)
        self.needed = ex.session_inputs(self.session)
        self.values = ex.run(self.session, self._feeds(batch_input), self.outputs)
        raw = self.values[layer.output]
        self.raw_dtype = raw.dtype
        dequantize = model._dequantizers([layer]).get(layer.name)
        if dequantize is not None:
            raw = (raw.astype(np.float32) - dequantize[1]) * dequantize[0]
        maps = ex.to_channel_first(np.asarray(raw), layer.output_perm)
        if maps.ndim != 4:
            raise InspectorError(f"layer '{layer.name}' gives {maps.ndim}-D maps {maps.shape}; a CAM needs (N, C, H, W)")
        self.maps = np.asarray(maps[0], np.float32)
        if self.maps.shape[1] * self.maps.shape[2] <= 1:
            raise InspectorError(
                f"layer '{layer.name}' has {self.maps.shape[1]}x{self.maps.shape[2]} maps: nothing to locate; choose an "
                "earlier layer with spatial maps (--layer; leave it out for the last spatial one)")

    def _feeds(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The image inputs (a fixed batch filled) and the model's other inputs (``inspector.inputs``)."""
        return self.model.input.feeds(x, self.needed)

    def chunks(self, total: int, desc: str):
        from ..progress import progress

        step = self.fixed or self.batch_size
        starts = range(0, total, step)
        for start in progress(starts, total=len(starts), desc=desc, unit="batch", quiet=self.quiet):
            yield start, min(start + step, total)

    def in_batches(self, score_some, arrays: list[np.ndarray]) -> np.ndarray:
        """Scores of ``len(arrays[0])`` inputs, each run of ``score_some`` as large as the model allows."""
        count = arrays[0].shape[0]
        if self.fixed:
            groups = [(s, min(s + self.fixed, count)) for s in range(0, count, self.fixed)]
            scores = []
            for start, stop in groups:
                pad = self.fixed - (stop - start)
                part = [np.concatenate([a[start:stop], np.repeat(a[stop - 1:stop], pad, axis=0)]) if pad else
                        a[start:stop] for a in arrays]
                scores.append(score_some(part)[: stop - start])
            return np.concatenate(scores)
        if not self.one_by_one:
            try:
                return score_some(arrays)
            except InspectorError:
                if count == 1:
                    raise
                self.one_by_one = True  # an open batch dimension that a Reshape inside pins to 1
                if self.verbose:
                    print("inspector: the model takes one input per run; running one at a time", file=sys.stderr)
        return np.concatenate([score_some([a[i:i + 1] for a in arrays]) for i in range(count)])

    # ------------------------------------------------------------ the whole model (ScoreCAM)

    def score_inputs(self, inputs: np.ndarray) -> np.ndarray:
        from .. import execution as ex

        def score_some(arrays):
            values = ex.run(self.session, self._feeds(arrays[0]), [self.target.tensor])
            return self.target.scores(values[self.target.tensor])

        self.runs += inputs.shape[0]
        return self.in_batches(score_some, [inputs])

    # --------------------------------------------------------- the graph after the layer (AblationCAM)

    def tail(self) -> "Tail":
        if not np.issubdtype(self.raw_dtype, np.floating):
            raise InspectorError(f"layer '{self.layer.name}' is quantized ({self.raw_dtype}); AblationCAM feeds "
                                 "float maps: use --method scorecam")
        return Tail(self)


class Tail:
    """A session over the part of the graph after the target layer, fed with (modified) maps."""

    def __init__(self, run: Run):
        from .. import execution as ex

        self.run = run
        model = run.model.file.model
        self.plan = cutting.plan(model, run.layer.output, run.target.tensor, run.model.input.name)
        # The model's other inputs (a shape, a scale factor) that the graph after the layer reads: filled by rule.
        others = {o.name for o in run.model.input.others} & set(self.plan.fed)
        filled = run.model.input.feeds(run.batch, sorted(others)) if others else {}
        fed_values = {name: run.values[name] if name in run.values else filled.get(name) for name in self.plan.fed}
        missing = [name for name, value in fed_values.items() if value is None]
        if missing:
            raise InspectorError(f"internal: tensors {', '.join(missing)} were not kept from the first run")
        self.fed = fed_values
        dtypes = {run.layer.output: run.values[run.layer.output].dtype,
                  **{name: value.dtype for name, value in fed_values.items()}}
        proto = cutting.build(model, self.plan, dtypes)
        self.session, _ = ex.create_session(run.model.file.serialized(proto), run.model.file.folder, run.device,
                                            run.verbose, run.relayout)

    def scores(self, maps: np.ndarray) -> np.ndarray:
        """Target scores for channel-first maps (n, C, h, w) fed in place of the layer's output."""
        from .. import execution as ex

        run, perm = self.run, self.run.layer.output_perm
        stored = np.transpose(maps, perm) if perm else maps
        dtype = run.values[run.layer.output].dtype

        def score_some(arrays):
            n = arrays[0].shape[0]
            feeds = {run.layer.output: np.ascontiguousarray(arrays[0], dtype=dtype)}
            for name, value in self.fed.items():
                # Activations (batch first) repeat with the batch; shape arithmetic (1-D) goes as it is,
                # and where it pins the batch to 1 the run falls back to one input at a time.
                feeds[name] = np.repeat(value[:1], n, axis=0) if value.ndim >= 2 and value.shape[0] == 1 else value
            values = ex.run(self.session, feeds, [run.target.tensor])
            return run.target.scores(values[run.target.tensor])

        run.runs += maps.shape[0]
        return run.in_batches(score_some, [stored])


def compute(model, image, method: str | None = None, layer=None, target=None, *, batch: int = DEFAULT_BATCH,
            preprocess=None, size=None, device: str = "auto", verbose: bool = False, quiet: bool = True,
            on_provider=None, max_memory: int | None = None, on_feeding=None) -> CamResult:
    """A class activation map of ``image`` (a path, or (H, W, 3) uint8 pixels) for ``model`` (``inspector.load``).

    ``method`` None (or "auto"): one that fits the model's outputs (``choose_method``), said in the notes.
    ``on_feeding``: called with how the model is fed (``inspector.inputs.Feeding``) before the run.
    """
    from ..execution import one_blas_thread

    with one_blas_thread():  # NumPy's products between runs must not leave BLAS threads spinning
        return _compute(model, image, method, layer, target, batch=batch, preprocess=preprocess, size=size,
                        device=device, verbose=verbose, quiet=quiet, on_provider=on_provider, max_memory=max_memory,
                        on_feeding=on_feeding)


AUTO = "auto"


def choose_method(outputs: dict[str, np.ndarray], target) -> tuple[str, str | None]:
    """(method, note) for ``--method`` left out: ScoreCAM where the model has one class output (N, classes) or
    a target is named; EigenCAM, which needs no target, where it has none (detectors, segmenters, OCR)."""
    if target not in (None, "top"):
        return "scorecam", None
    classes = [name for name, value in outputs.items() if np.ndim(value) == 2]
    if len(classes) == 1:
        return "scorecam", None
    shapes = ", ".join(f"{name} {tuple(np.shape(value))}" for name, value in outputs.items())
    why = "no class output" if not classes else f"{len(classes)} class outputs"
    hint = (f"--method scorecam --target {next(iter(outputs))}:max" if not classes
            else f"--target {classes[0]}:top")
    return "eigencam", (f"the model has {why} (outputs: {shapes}): EigenCAM, which needs no target; to score "
                        f"an output instead: {hint}")


def _default_target(cam_method, target, outputs: dict[str, np.ndarray]) -> tuple[str | None, str | None]:
    """A method that needs a target, given none, on a model without one class output: its only output's max."""
    if not cam_method.needs_target or target is not None:  # an explicit "top" asks for a class: no stand-in
        return target, None
    if sum(1 for value in outputs.values() if np.ndim(value) == 2) or len(outputs) != 1:
        return target, None
    (name,) = outputs
    return f"{name}:max", (f"the model has no class output: {cam_method.name} scores its only output's maximum "
                           f"({name}:max); --target OUTPUT:mean or OUTPUT:CH:max for another score")


def _compute(model, image, method, layer, target, *, batch, preprocess, size, device, verbose, quiet, on_provider,
             max_memory, on_feeding=None) -> CamResult:
    from ..preprocess import load_image
    from ..resources import DEFAULT_MAX_MEMORY, check_maps_memory

    auto = method in (None, AUTO)
    cam_method = None if auto else lookup(method)
    path = None if isinstance(image, np.ndarray) else image
    feeding = model.feeding(preprocess, size, [image], path)
    if on_feeding is not None:
        on_feeding(feeding)
    spec, input_size = feeding.preprocess, feeding.size
    chosen = model.layer(layer) if layer is not None else default_layer(model, input_size)
    # Before any batch is allocated: a size from hostile metadata must not reach onnxruntime's allocator.
    check_maps_memory(model, [chosen], input_size, DEFAULT_MAX_MEMORY if max_memory is None else max_memory)
    channels = model.input.channels or 3
    if isinstance(image, np.ndarray):
        pixels = _sized(image, input_size)
        image_name = ""
    else:
        pixels = load_image(image, input_size, channels)
        image_name = os.path.basename(os.fspath(image))
    batch_input = model.image_batch([pixels], spec, input_size)
    output_names = [o.name for o in model.file.model.graph.output]
    logits = tg.softmax_inputs(model.graph, output_names)
    extra = [*output_names, *logits.values()]
    if cam_method is not None and cam_method.name == "ablationcam":
        extra += _skip_tensors(model, chosen, [*output_names, *logits.values()])
    run = Run(model, chosen, batch_input, input_size, batch, device, verbose, quiet, extra)
    if on_provider is not None:
        on_provider(run.provider)
    outputs = {name: run.values[name] for name in output_names}
    notes = []
    if auto:
        name, why = choose_method(outputs, target)
        cam_method = lookup(name)
        notes.append(why or f"{name}: the model has a class output (--method for another)")
    if not cam_method.needs_target and target not in (None, "top"):
        notes.append(f"{cam_method.name} has no target: --target {target} was not used")
        target = None
    target, why = _default_target(cam_method, target, outputs)
    if why:
        notes.append(why)
    run.target = tg.resolve(target, outputs, logits, tg.class_names(model.metadata), cam_method.needs_target,
                            cam_method.name)
    score = None
    if run.target is not None:
        score = float(run.target.scores(run.values[run.target.tensor])[0])
    low = np.maximum(cam_method.low_res_cam(run), 0).astype(np.float32)
    if not low.any():
        notes.append("the map is zero everywhere: no channel combination supports the target at this layer")
    cam = min_max(upsample(low, input_size))
    photo = pixels if pixels.shape[-1] == 3 else np.repeat(pixels, 3, axis=-1)
    return CamResult(
        cam=cam, low_res=low, method=cam_method.name, layer=chosen.name, layer_shape=tuple(run.maps.shape),
        target=run.target.index if run.target else -1, target_label=run.target.label if run.target else "",
        score=score, weights=run.weights, photo=np.asarray(photo, np.uint8), model_name=model.name,
        image_name=image_name, provider=run.provider, runs=run.runs, untrained=model.untrained, notes=notes,
        method_source="chosen" if auto else "flag", feeding=feeding.to_dict())


def _skip_tensors(model, layer, scored: list[str]) -> list[str]:
    """Tensors the graph after ``layer`` needs from before it (kept from the first run for AblationCAM)."""
    fed = []
    for tensor in scored:
        try:
            fed += cutting.plan(model.file.model, layer.output, tensor, model.input.name).fed
        except InspectorError:
            continue  # not this output; the chosen target's own plan reports why, if it is the one
    return list(dict.fromkeys(fed))


def _sized(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[:2] == tuple(size):
        return pixels.astype(np.uint8, copy=False)
    squeeze = pixels.shape[-1] == 1
    img = Image.fromarray(pixels[..., 0] if squeeze else pixels.astype(np.uint8))
    resized = np.asarray(img.resize((size[1], size[0]), Image.Resampling.BILINEAR))
    return resized[..., None] if squeeze else resized
