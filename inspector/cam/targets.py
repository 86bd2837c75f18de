"""What a CAM explains: the target spec (``--target``), class names from the metadata, and scoring.

A target is one number per input, computed from the model's outputs:

- a class output (N, K): ``top`` (the class with the highest score on the photo), an index ``K``, or a
  class name from the metadata (our converters' ``inspector.class_names``, Ultralytics' ``names``);
  where that output is made by a ``Softmax`` node, its input (the logits) is scored instead, as
  pytorch-grad-cam scores a torch model's logits: softmax probabilities saturate and would weigh every
  channel alike;
- any other output (detection maps, segmentation): ``OUTPUT:max`` or ``OUTPUT:mean`` reduces that
  whole output, per input, to one score; ``OUTPUT:CH:max`` reduces one channel (axis 1) of it, CH an
  index or a class name. A class name picks among the LAST K channels, K the number of names: YOLOv8's
  output (1, 4 + K, anchors) puts its K class scores after the 4 box coordinates; a segmenter's
  (N, K, H, W) has no offset.

``OUTPUT:top``, ``OUTPUT:K`` and ``OUTPUT:NAME`` pick the class output by name where there are several.
"""

from __future__ import annotations

import ast
import difflib
from dataclasses import dataclass

import numpy as np

from .. import metadata as md
from ..errors import InspectorError

REDUCTIONS = ("max", "mean")
SPEC_HELP = ("top (default), a class index, a class name from the model's metadata, or OUTPUT:max / "
             "OUTPUT:mean to score a model without a class output (detectors, segmenters)")


class NoClassOutput(InspectorError):
    """The method needs a class score and the model has no single class output (the report skips its section)."""


@dataclass(frozen=True)
class Target:
    tensor: str  # the tensor scored (the logits where the class output is a Softmax)
    output: str  # the model output it stands for
    index: int  # class index, -1 for a reduction
    reduce: str | None  # "max" | "mean" | None for a class
    label: str  # for titles: "class 2 (glioma)", "sigmoid_0.tmp_0 max"
    channel: int | None = None  # with a reduction: the one channel (axis 1) reduced

    def scores(self, values: np.ndarray) -> np.ndarray:
        """One float per input of the batch, from the scored tensor's values (N, ...)."""
        values = np.asarray(values, dtype=np.float64)
        if self.reduce is None:
            return values.reshape(values.shape[0], -1)[:, self.index]
        if self.channel is not None:
            values = values[:, self.channel]
        flat = values.reshape(values.shape[0], -1)
        return flat.max(axis=1) if self.reduce == "max" else flat.mean(axis=1)


def class_names(metadata: dict[str, str]) -> list[str] | None:
    """Class names by index: ``inspector.class_names`` (a JSON list) or Ultralytics' ``names`` (a dict literal)."""
    names = md.json_value(metadata, md.CLASS_NAMES)
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return names
    raw = metadata.get("names")
    if raw and len(raw) < 200_000:  # a literal, never code: literal_eval evaluates no call or name
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):  # TypeError: {[1]: 2}
            return None
        if isinstance(value, dict) and value and all(isinstance(k, int) for k in value):
            if sorted(value) == list(range(len(value))):
                return [str(value[i]) for i in range(len(value))]
        if isinstance(value, (list, tuple)) and all(isinstance(n, str) for n in value):
            return list(value)
    return None


def split_spec(spec: str, output_names: list[str]) -> tuple[str | None, str]:
    """(output name or None, the rest) of ``OUTPUT:what``; output names may themselves hold ':'."""
    spec = str(spec).strip()
    if ":" in spec:
        head, tail = spec.rsplit(":", 1)
        if head in output_names:
            return head, tail.strip()
        if tail.strip().lower() in REDUCTIONS:
            raise InspectorError(
                f"--target '{spec}': the model has no output named '{head}'; its outputs are "
                f"{', '.join(output_names)}")
    return None, spec


def resolve(spec: str | int | None, outputs: dict[str, np.ndarray], logits: dict[str, str],
            names: list[str] | None, needs_target: bool, method: str) -> Target | None:
    """The target for ``spec`` given the model's outputs from one run on the photo.

    ``logits``: {output name: the Softmax input that produced it} where there is one.
    Returns None when the method needs no target and the spec is the default.
    """
    spec = "top" if spec is None else str(spec)
    output_names = list(outputs)
    channel_target = _channel_target(spec, outputs, names)
    if channel_target is not None:
        return channel_target
    chosen, what = split_spec(spec, output_names)
    if what.lower() in REDUCTIONS:
        name = chosen or _only_output(output_names, spec)
        return Target(name, name, -1, what.lower(), f"{name} {what.lower()}")
    if not needs_target and spec == "top":
        return None
    candidates = [chosen] if chosen else [n for n, v in outputs.items() if np.ndim(v) == 2]
    if chosen and np.ndim(outputs[chosen]) != 2:
        raise InspectorError(
            f"--target '{spec}': output '{chosen}' has shape {tuple(np.shape(outputs[chosen]))}, not (N, classes); "
            f"score it with --target {chosen}:max or {chosen}:mean")
    if not candidates:
        shapes = ", ".join(f"{n} {tuple(np.shape(v))}" for n, v in outputs.items())
        raise NoClassOutput(
            f"{method} needs a class score, and this model has no class output (outputs: {shapes}); use "
            f"--method eigencam, which needs none, or say what to score with --target OUTPUT:max or OUTPUT:mean")
    if len(candidates) > 1:
        raise NoClassOutput(
            f"the model has several class outputs ({', '.join(candidates)}); name one with --target OUTPUT:{what}")
    output = candidates[0]
    values = np.asarray(outputs[output])
    count = values.shape[1]
    index = _class_index(what, values, count, names, output)
    tensor = logits.get(output, output)
    named = names[index] if names and len(names) == count else None
    label = f"class {index}" + (f" ({named})" if named else "")
    return Target(tensor, output, index, None, label)


def _channel_target(spec: str, outputs: dict, names: list[str] | None) -> Target | None:
    """``OUTPUT:CH:max|mean``: one channel (axis 1) of an output, reduced; None when the spec is not of that form."""
    parts = spec.rsplit(":", 2)
    if len(parts) != 3 or parts[2].strip().lower() not in REDUCTIONS or parts[0] not in outputs:
        return None
    output, what, reduce = parts[0], parts[1].strip(), parts[2].strip().lower()
    shape = np.shape(outputs[output])
    if len(shape) < 2:
        raise InspectorError(f"--target '{spec}': output '{output}' has shape {tuple(shape)}, no channel axis; "
                             f"use --target {output}:{reduce}")
    count = shape[1]
    if what.lstrip("-").isdigit():
        channel = int(what)
        if not 0 <= channel < count:
            raise InspectorError(f"--target '{spec}': channel {channel} is out of range: output '{output}' has "
                                 f"{count} channels on axis 1 (0..{count - 1})")
        return Target(output, output, -1, reduce, f"{output} channel {channel} {reduce}", channel)
    if not names or len(names) > count:
        raise InspectorError(f"--target '{spec}': the model's metadata has no class names for output '{output}' "
                             f"({count} channels); give a channel index 0..{count - 1}")
    values = np.asarray(outputs[output], np.float64)[:1, count - len(names):].reshape(1, len(names), -1)
    per_class = values.max(axis=2) if reduce == "max" else values.mean(axis=2)
    index = _class_index(what, per_class, len(names), names, output)  # top: the class scoring highest
    channel = count - len(names) + index  # the class channels are the last len(names)
    return Target(output, output, index, reduce, f"class {index} ({names[index]}) {reduce} over {output}", channel)


def _only_output(output_names: list[str], spec: str) -> str:
    if len(output_names) == 1:
        return output_names[0]
    raise InspectorError(f"--target '{spec}': the model has {len(output_names)} outputs "
                         f"({', '.join(output_names)}); say which, e.g. --target {output_names[0]}:{spec}")


def _class_index(what: str, values: np.ndarray, count: int, names: list[str] | None, output: str) -> int:
    if what.lower() == "top":
        return int(np.argmax(values[0]))
    text = what.strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if not 0 <= index < count:
            raise InspectorError(f"--target {index} is out of range: output '{output}' has {count} classes "
                                 f"(0..{count - 1})")
        return index
    if not names:
        raise InspectorError(f"--target '{text}': the model's metadata has no class names; give a class "
                             f"index 0..{count - 1} or top")
    if len(names) != count:
        raise InspectorError(f"the model's metadata names {len(names)} classes but output '{output}' has "
                             f"{count}; give a class index 0..{count - 1}")
    if text in names:
        return names.index(text)
    folded = [i for i, n in enumerate(names) if n.lower() == text.lower()]
    if len(folded) == 1:
        return folded[0]
    close = difflib.get_close_matches(text, names, n=4, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f" (it has {count}: {', '.join(names[:6])}{' ...' if count > 6 else ''})"
    raise InspectorError(f"--target '{text}' is not a class name of this model{hint}")


def softmax_inputs(graph, output_names: list[str]) -> dict[str, str]:
    """{output: the input of the Softmax (through Identity) that makes it}: the logits to score."""
    found = {}
    for name in output_names:
        tensor = name
        for _ in range(3):
            i = graph.producer.get(tensor)
            if i is None:
                break
            node = graph.nodes[i]
            if node.op_type == "Identity":
                tensor = node.input[0]
                continue
            if node.op_type == "Softmax" and node.domain in ("", "ai.onnx"):
                found[name] = node.input[0]
            break
    return found
