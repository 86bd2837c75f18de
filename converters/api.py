"""The converters' Python API; ``converters.cli`` only parses arguments and calls these."""

from __future__ import annotations

import gc
import json
import os
import sys
from dataclasses import dataclass, field
from typing import Callable

from inspector.errors import InspectorError
from inspector.preprocess import Preprocess, preset

from . import keras_apps, onnx_passes, writer
from .measure import NoStages, Stages


def _warn(message: str) -> None:
    print(f"inspector convert: warning: {message}", file=sys.stderr)


def _quiet(_message: str) -> None:
    pass


@dataclass
class ConversionResult:
    path: str
    conv_layers: list[str]
    metadata: dict[str, str]
    ops: dict[str, int]
    transposes: int
    stages: dict = field(default_factory=dict)
    parity: list = field(default_factory=list)


def _as_preprocess(value, input_size) -> Preprocess | None:
    if value is None or isinstance(value, Preprocess):
        return value.with_size(input_size) if isinstance(value, Preprocess) and input_size else value
    return preset(value, input_size)


def _check_out(out: str) -> None:
    out = os.fspath(out)
    folder = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(folder):
        raise InspectorError(f"output folder does not exist: {folder} (create it first)")
    if os.path.isdir(out):
        raise InspectorError(f"output path is a directory: {out}; give a file name ending in .onnx")


# ------------------------------------------------------------------ Keras

def convert_keras_model(model, out: str, *, preprocess=None, model_name: str | None = None,
                        class_names=None, weights_trained: bool | None = None, weights_source: str | None = None,
                        opset: int = 17, check: bool = False, image: str | None = None,
                        echo: Callable[[str], None] = _quiet, measure: bool = False,
                        stages=None) -> ConversionResult:
    """Convert an in-memory Keras 3 model. ``preprocess``: a preset name, a Preprocess, or None (unknown)."""
    from .keras_convert import import_tensorflow, keras_to_onnx

    tf, keras = import_tensorflow()
    _check_out(out)
    stages = stages or (Stages(echo=echo) if measure else NoStages())
    input_shape = tuple(model.inputs[0].shape[1:]) if model.inputs else ()
    size = (input_shape[0], input_shape[1]) if len(input_shape) == 3 and all(input_shape[:2]) else None
    if preprocess is None:
        preprocess = keras_apps.preprocessing_for(model.name, size)
    spec = _as_preprocess(preprocess, size)

    conversion = keras_to_onnx(model, opset=opset, stages=stages)
    onnx_model = conversion.model
    writer.check_opset(onnx_model)
    import tf2onnx

    writer.stamp(onnx_model, writer.common_metadata(
        "keras", f"keras {keras.__version__}; tensorflow {tf.__version__}", f"tf2onnx {tf2onnx.__version__} (structure) + inspector weight attach",
        model_name or model.name, conversion.input_layout, spec, class_names, weights_trained, weights_source))

    parity = []

    def verify(tmp: str) -> None:
        if check:
            from .parity import check_keras

            echo("parity check (source model vs onnxruntime):")
            with stages("parity check"):
                parity.extend(check_keras(model, tmp, conversion.conv_layers, spec or preset("raw", size),
                                          conversion.input_layout, image=image, echo=echo,
                                          tensor_layers=conversion.tensor_layers))

    ops = onnx_passes.op_counts(onnx_model)
    transposes = onnx_passes.transpose_count(onnx_model)
    metadata = {p.key: p.value for p in onnx_model.metadata_props}
    writer.write_model(onnx_model, out, verify=verify if check else None, stages=stages,
                       payloads=conversion.payloads)
    del onnx_model, conversion.model
    stages.close()
    return ConversionResult(os.fspath(out), conversion.conv_layers, metadata, ops, transposes,
                            stages.summary() if isinstance(stages, Stages) else {}, parity)


def convert_keras_app(name: str, out: str, *, weights: str = "imagenet", include_top: bool = True,
                      opset: int = 17, check: bool = False, image: str | None = None,
                      echo: Callable[[str], None] = _quiet, warn: Callable[[str], None] = _warn,
                      measure: bool = False) -> ConversionResult:
    """Any ``keras.applications`` model by name, e.g. ``convert_keras_app("VGG16", "vgg16.onnx")``."""
    from .keras_convert import import_tensorflow

    import_tensorflow()
    _check_out(out)
    stages = Stages(echo=echo) if measure else NoStages()
    with stages("build keras model"):
        real, model, source, trained = keras_apps.build_application(name, weights, include_top, warn=warn)
    shape = tuple(model.inputs[0].shape[1:])
    size = (shape[0], shape[1]) if all(shape[:2]) else None
    spec = keras_apps.preprocessing_for(real, size)
    classes = keras_apps.imagenet_class_names() if (trained and source == "imagenet" and include_top) else None
    return convert_keras_model(model, out, preprocess=spec, model_name=real.lower(), class_names=classes,
                               weights_trained=trained, weights_source=source, opset=opset, check=check,
                               image=image, echo=echo, stages=stages)


def load_keras_file(path: str, unsafe: bool = False, custom_objects: dict | None = None):
    """A Keras model from a .keras archive, a Keras 2 or 3 .h5 file, or a Keras 2 JSON architecture with
    its .h5 weights beside it (see ``keras_legacy``: Keras 2 files through tf_keras, Lambda layers refused
    before anything is deserialized unless ``unsafe``)."""
    from . import keras_legacy
    from .keras_convert import import_tensorflow

    _, keras = import_tensorflow()
    if not os.path.exists(path):
        raise InspectorError(f"model file not found: {path}")
    if os.path.isdir(path):
        raise InspectorError(f"{path} is a directory; give a .keras or .h5 file (SavedModel folders are not Keras 3 models)")
    if path.endswith(".json"):
        return keras_legacy.load_json_architecture(path, unsafe, custom_objects)
    if not path.endswith((".keras",) + keras_legacy.H5_SUFFIXES):
        raise InspectorError(f"{path}: expected a .keras, .h5 or .json (architecture) Keras model file")
    legacy = False
    if path.endswith(keras_legacy.H5_SUFFIXES):
        attributes = keras_legacy.h5_attributes(path)
        if "model_config" not in attributes:
            architecture = keras_legacy.architecture_beside(path)
            hint = f"convert {architecture} instead (its weights are read from this file)" if architecture else \
                "give the model's JSON architecture (saved beside it as the same name .json)"
            raise InspectorError(f"{path} holds only weights, no model; {hint}")
        try:
            config = json.loads(attributes["model_config"])
        except (TypeError, json.JSONDecodeError):
            raise InspectorError(f"{path}: its model_config attribute is not JSON; not a Keras model file") from None
        if not unsafe:
            keras_legacy.refuse_lambdas(config, path)
        legacy = (keras_legacy.keras_major(attributes.get("keras_version", "")) or 3) < 3
    try:
        return keras.models.load_model(path, compile=False, safe_mode=not unsafe, custom_objects=custom_objects)
    except Exception as exc:
        text = " ".join(str(exc).split())
        if legacy:  # a Keras 2 file Keras 3 refuses: tf_keras reads it (its Lambdas were checked above)
            return keras_legacy.load_legacy_h5(path, unsafe, custom_objects, f"{exc.__class__.__name__}: {text}")
        if "lambda" in text.lower() and "safe" in text.lower():
            raise InspectorError(f"{path} contains a Lambda layer, which runs arbitrary code when loaded; "
                                 "pass --unsafe only if you trust the file") from None
        unknown = _unknown_class(text)
        if unknown:
            raise InspectorError(f"{path} uses the custom layer or object '{unknown}' that Keras cannot find; "
                                 "pass --custom-objects FILE.py (a module defining and registering it)") from None
        raise InspectorError(f"{path} is not a Keras model Keras can load ({exc.__class__.__name__}: {text[:200]})") from None


def _unknown_class(text: str) -> str | None:
    import re

    match = re.search(r"Could not locate (?:class|function) '([^']+)'", text) or \
        re.search(r"Unknown (?:layer|object)[^:]*: '?([A-Za-z_][\w.]*)", text)
    return match.group(1) if match else None


def load_custom_objects(spec: str | None) -> dict | None:
    """Import FILE.py or a module; its registered classes become loadable, plus any CUSTOM_OBJECTS dict."""
    if not spec:
        return None
    from .user_code import import_user_module

    module = import_user_module(spec, "--custom-objects")
    objects = getattr(module, "CUSTOM_OBJECTS", None)
    if objects is None:
        objects = {n: v for n, v in vars(module).items() if isinstance(v, type) and not n.startswith("_")}
    return dict(objects)


def convert_keras_file(path: str, out: str, *, preprocess: str | None = None, unsafe: bool = False,
                       custom_objects: str | dict | None = None, opset: int = 17, check: bool = False,
                       image: str | None = None, echo: Callable[[str], None] = _quiet,
                       warn: Callable[[str], None] = _warn, measure: bool = False) -> ConversionResult:
    """A saved ``.keras``/``.h5`` model. Preprocessing: given, known from the model's name, or 'unknown'."""
    _check_out(out)
    objects = custom_objects if isinstance(custom_objects, dict) else load_custom_objects(custom_objects)
    model = load_keras_file(path, unsafe=unsafe, custom_objects=objects)
    shape = tuple(model.inputs[0].shape[1:]) if model.inputs else ()
    size = (shape[0], shape[1]) if len(shape) == 3 and all(shape[:2]) else None
    spec = _as_preprocess(preprocess, size) if preprocess else keras_apps.preprocessing_for(model.name, size)
    if spec is None:
        warn(f"the preprocessing of '{model.name}' is unknown; the metadata says so and `inspector maps` will "
             "ask for --preprocess (or convert again with --preprocess caffe|torch|tf|raw)")
    return convert_keras_model(model, out, preprocess=spec, model_name=model.name,
                               weights_source=os.path.basename(path), weights_trained=None, opset=opset,
                               check=check, image=image, echo=echo, measure=measure)


# ------------------------------------------------------------------ TFLite

def convert_tflite_file(path: str, out: str, *, preprocess: str | None = None, opset: int = 17,
                        check: bool = False, image: str | None = None, echo: Callable[[str], None] = _quiet,
                        warn: Callable[[str], None] = _warn, measure: bool = False) -> ConversionResult:
    """A ``.tflite`` model (float32, float16, int8) through tf2onnx's TFLite path; see ``tflite_convert``."""
    from .tflite_convert import check_tflite, metadata_extra, preprocessing_from_quantization, read_tflite, \
        tflite_to_onnx

    read_tflite(path)
    _check_out(out)
    stages = Stages(echo=echo) if measure else NoStages()
    with stages("tf2onnx from_tflite"):
        conversion = tflite_to_onnx(path, opset=opset)
    onnx_model = conversion.model
    writer.check_opset(onnx_model)
    dims = onnx_model.graph.input[0].type.tensor_type.shape.dim if onnx_model.graph.input else []
    shape = [d.dim_value for d in dims]
    size = (shape[1], shape[2]) if len(shape) == 4 and shape[1] and shape[2] else None
    spec = _as_preprocess(preprocess, size) if preprocess else \
        preprocessing_from_quantization(conversion.input_quantization, size)
    if spec is None:
        warn(f"the preprocessing of {os.path.basename(path)} is unknown; the metadata says so and `inspector maps` "
             "will ask for --preprocess (or convert again with --preprocess caffe|torch|tf|raw)")
    import tensorflow as tf
    import tf2onnx

    model_name = os.path.splitext(os.path.basename(path))[0]
    values = writer.common_metadata("tflite", f"tflite ({conversion.precision}); tensorflow {tf.__version__}",
                                    f"tf2onnx {tf2onnx.__version__} (from_tflite) + inspector names", model_name,
                                    "NHWC", spec, None, None, os.path.basename(path))
    values.update(metadata_extra(conversion))
    writer.stamp(onnx_model, values)
    parity = []

    def verify(tmp: str) -> None:
        with stages("parity check"):
            parity.extend(check_tflite(path, tmp, conversion, spec or preset("raw", size), image=image, echo=echo))

    ops = onnx_passes.op_counts(onnx_model)
    transposes = onnx_passes.transpose_count(onnx_model)
    metadata = {p.key: p.value for p in onnx_model.metadata_props}
    writer.write_model(onnx_model, out, verify=verify if check else None, stages=stages)
    stages.close()
    return ConversionResult(os.fspath(out), conversion.conv_layers, metadata, ops, transposes,
                            stages.summary() if isinstance(stages, Stages) else {}, parity)


# ------------------------------------------------------------------ TensorFlow

def convert_tf(path: str, out: str, *, preprocess: str | None = None, inputs: str | None = None,
               outputs: str | None = None, tag: str | None = None, signature: str | None = None, opset: int = 17,
               check: bool = False, image: str | None = None, echo: Callable[[str], None] = _quiet,
               warn: Callable[[str], None] = _warn, measure: bool = False) -> ConversionResult:
    """A SavedModel folder or a TF1 frozen graph ``.pb`` through tf2onnx; see ``tf_convert``."""
    from .tf_convert import _names, check_tf, tf_to_onnx

    _check_out(out)
    stages = Stages(echo=echo) if measure else NoStages()
    with stages("tf2onnx from_graph_def"):
        conversion = tf_to_onnx(os.fspath(path), opset=opset, inputs=_names(inputs), outputs=_names(outputs),
                                tag=tag, signature=signature)
    onnx_model = conversion.model
    writer.check_opset(onnx_model)
    dims = onnx_model.graph.input[0].type.tensor_type.shape.dim if onnx_model.graph.input else []
    shape = [d.dim_value for d in dims]
    layout = "NCHW" if len(shape) == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3) else "NHWC"
    size = ((shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])) if len(shape) == 4 else None
    size = size if size and all(size) else None
    spec = _as_preprocess(preprocess, size) if preprocess else None
    if spec is None:
        warn(f"the preprocessing of {os.path.basename(os.fspath(path).rstrip('/'))} is unknown; the metadata says so "
             "and `inspector maps` will ask for --preprocess (or convert again with --preprocess caffe|torch|tf|raw)")
    import tensorflow as tf
    import tf2onnx

    name = os.path.splitext(os.path.basename(os.fspath(path).rstrip("/")))[0]
    writer.stamp(onnx_model, writer.common_metadata(
        "tensorflow", f"tensorflow {tf.__version__} ({conversion.kind.replace('_', ' ')})",
        f"tf2onnx {tf2onnx.__version__} (from_graph_def) + inspector names", name, layout, spec, None, None,
        os.path.basename(os.fspath(path).rstrip("/"))))
    parity = []

    def verify(tmp: str) -> None:
        with stages("parity check"):
            parity.extend(check_tf(conversion, tmp, spec or preset("raw", size), image=image, echo=echo))

    ops = onnx_passes.op_counts(onnx_model)
    transposes = onnx_passes.transpose_count(onnx_model)
    metadata = {p.key: p.value for p in onnx_model.metadata_props}
    writer.write_model(onnx_model, out, verify=verify if check else None, stages=stages)
    stages.close()
    return ConversionResult(os.fspath(out), conversion.conv_layers, metadata, ops, transposes,
                            stages.summary() if isinstance(stages, Stages) else {}, parity)


# ------------------------------------------------------------------ torch

def convert_torch(factory, input_shape, out: str, *, weights: str | None = None, preprocess="torch",
                  model_name: str | None = None, opset: int = 17, check: bool = False, image: str | None = None,
                  echo: Callable[[str], None] = _quiet, measure: bool = False,
                  forward_args: dict[str, float] | None = None,
                  warn: Callable[[str], None] = _warn) -> ConversionResult:
    """``factory``: a callable returning an nn.Module, or 'FILE.py:NAME' / 'pkg.mod:NAME' (optionally called
    with literal arguments, 'pkg.mod:NAME(3)'). ``forward_args``: forward's arguments after the image, each
    bound to one value per picture (FFDNet's ``noise_sigma``)."""
    from . import torch_convert

    torch_convert.import_torch()
    _check_out(out)
    shape = torch_convert.parse_input_shape(input_shape)
    stages = Stages(echo=echo) if measure else NoStages()
    if isinstance(factory, str) and torch_convert.is_torchscript_spec(factory):
        if weights:
            raise InspectorError(f"{factory} is a TorchScript archive with its own weights; drop --weights")
        name = model_name or os.path.splitext(os.path.basename(factory))[0]
        with stages("build module"):
            module = torch_convert.load_torchscript(factory)
        spec = _as_preprocess(preprocess, (shape[2], shape[3])) if preprocess else None
        return convert_torch_module(module, shape, out, model_name=name, preprocess=spec, class_names=None,
                                    weights_trained=None, weights_source=os.path.basename(factory),
                                    opset=opset, check=check, image=image, echo=echo, stages=stages)
    if isinstance(factory, str):
        name = model_name or factory.split("(", 1)[0].rsplit(":", 1)[-1]
        factory = torch_convert.resolve_factory(factory)
    else:
        name = model_name or getattr(factory, "__name__", type(factory).__name__)
    with stages("build module"):
        module = torch_convert.build_module(factory, weights, warn=warn)
    from . import torch_trace

    restore = torch_trace.bind_forward_args(torch_convert.import_torch(), module, forward_args) \
        if forward_args else (lambda: None)
    try:
        with stages("batch probe"):
            fixed = torch_trace.batch_fixed_by_trace(torch_convert.import_torch(), module, shape)
        if fixed:
            warn(f"tracing {name} fixes its batch (a tensor sized from the traced input's shape): the file takes "
                 f"batch {shape[0]}, and pictures go through it one at a time")
        spec = _as_preprocess(preprocess, (shape[2], shape[3])) if preprocess else None
        return convert_torch_module(module, shape, out, model_name=name, preprocess=spec, class_names=None,
                                    weights_trained=True if weights else None,
                                    weights_source=os.path.basename(weights) if weights else "factory",
                                    opset=opset, check=check, image=image, echo=echo, stages=stages,
                                    dynamic_batch=not fixed)
    finally:
        restore()


def convert_torch_module(module, shape, out: str, *, model_name: str, preprocess=None, class_names=None,
                         weights_trained: bool | None = None, weights_source: str = "module", opset: int = 17,
                         check: bool = False, image: str | None = None, echo: Callable[[str], None] = _quiet,
                         stages=None, converter: str = "torch", dynamic_batch: bool = True) -> ConversionResult:
    """An nn.Module already built (in eval mode); ``shape``: (N, C, H, W) of the traced input."""
    from . import torch_convert

    torch = torch_convert.import_torch()
    _check_out(out)
    stages = stages or NoStages()
    spec = preprocess
    onnx_model, conv_layers, payloads = torch_convert.export(module, shape, opset=opset, stages=stages,
                                                             dynamic_batch=dynamic_batch)
    if not check:  # the payloads are views of its weights: only the module object goes
        del module
        gc.collect()
        module = None
    writer.check_opset(onnx_model)
    source_version = f"torch {torch.__version__}"
    if converter != "torch":
        library = __import__(converter)
        source_version += f"; {converter} {library.__version__}"
    writer.stamp(onnx_model, writer.common_metadata(
        "torch", source_version, f"torch.onnx {torch.__version__} (TorchScript exporter)",
        model_name, "NCHW", spec, class_names, weights_trained, weights_source))

    parity = []

    def verify(tmp: str) -> None:
        from .parity import check_torch

        echo("parity check (source model vs onnxruntime):")
        with stages("parity check"):
            parity.extend(check_torch(module, tmp, conv_layers, spec or preset("raw"), shape, image=image,
                                      echo=echo))

    ops = onnx_passes.op_counts(onnx_model)
    transposes = onnx_passes.transpose_count(onnx_model)
    metadata = {p.key: p.value for p in onnx_model.metadata_props}
    writer.write_model(onnx_model, out, verify=verify if check else None, stages=stages,
                       payloads=payloads)
    stages.close()
    return ConversionResult(os.fspath(out), conv_layers, metadata, ops, transposes,
                            stages.summary() if isinstance(stages, Stages) else {}, parity)


def _zoo_shape(spec: Preprocess, input_shape) -> tuple:
    from . import torch_convert

    if input_shape:
        return torch_convert.parse_input_shape(input_shape)
    return (1, 3, *spec.input_size)


def _convert_zoo(library: str, name: str, out: str, *, weights: str, input_shape, opset: int, check: bool,
                 image: str | None, echo, warn, measure: bool) -> ConversionResult:
    from . import torch_convert, torch_zoo

    torch_convert.import_torch()
    _check_out(out)
    stages = Stages(echo=echo) if measure else NoStages()
    with stages("build module"), torch_convert.warnings_quiet():
        found = (torch_zoo.torchvision_model if library == "torchvision" else torch_zoo.timm_model)(name, weights)
    if not found.trained:
        warn(f"{library} {found.name} gets random weights (--weights none): its filters and maps show an "
             "untrained network, and the model's metadata says so")
    model_name = f"{library}/{found.name}"
    if library == "torchvision" and torch_zoo.is_detection(found.name):
        model_name += " (backbone+neck)"
        warn(f"torchvision {found.name} is a detection model: its backbone+neck is converted (the feature maps "
             "its heads read: what maps and audits use), not its box heads, anchors and NMS")
    shape = _zoo_shape(found.preprocess, input_shape)
    spec = found.preprocess.with_size((shape[2], shape[3]))
    return convert_torch_module(found.module, shape, out, model_name=model_name, preprocess=spec,
                                class_names=found.class_names, weights_trained=found.trained,
                                weights_source=found.source, opset=opset, check=check, image=image, echo=echo,
                                stages=stages, converter=library)


def convert_torchvision(name: str, out: str, *, weights: str = "default", input_shape=None, opset: int = 17,
                        check: bool = False, image: str | None = None, echo: Callable[[str], None] = _quiet,
                        warn: Callable[[str], None] = _warn, measure: bool = False) -> ConversionResult:
    """A torchvision classification model by name, e.g. ``convert_torchvision("resnet18", "r18.onnx")``."""
    return _convert_zoo("torchvision", name, out, weights=weights, input_shape=input_shape, opset=opset,
                        check=check, image=image, echo=echo, warn=warn, measure=measure)


def convert_timm(name: str, out: str, *, weights: str = "default", input_shape=None, opset: int = 17,
                 check: bool = False, image: str | None = None, echo: Callable[[str], None] = _quiet,
                 warn: Callable[[str], None] = _warn, measure: bool = False) -> ConversionResult:
    """A timm model by name, e.g. ``convert_timm("resnet18", "r18.onnx", weights="none")``."""
    return _convert_zoo("timm", name, out, weights=weights, input_shape=input_shape, opset=opset,
                        check=check, image=image, echo=echo, warn=warn, measure=measure)
