"""``prune(model)``: trace, plan, cut; the result writes itself, prints its table and its JSON."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from ..errors import InspectorError
from .surgery import Surgery, apply
from .trace import Plan, Tracer

METADATA_KEY = "inspector.pruned"


def inferred_shapes(model_proto) -> dict[str, list]:
    """Static dims of every tensor onnx can infer (None for symbolic ones); {} where inference fails."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model_proto, strict_mode=False)
    except Exception:  # noqa: BLE001 - custom ops or a broken shape: trace without shapes
        return {}
    shapes = {}
    for info in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        tensor_type = info.type.tensor_type
        if tensor_type.HasField("shape"):
            shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
    return shapes


@dataclass
class LayerRow:
    name: str
    op: str
    filters_before: int
    filters_after: int
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None
    removed: list[int]
    folded: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class PruneResult:
    def __init__(self, model, tracer: Tracer, plan: Plan, surgery: Surgery, rows: list[LayerRow],
                 kept_dead: list[dict], approximate: dict[str, list[int]], params: tuple[int, int]):
        self.model = model
        self.tracer, self.plan, self.surgery = tracer, plan, surgery
        self.rows = rows
        self.kept_dead = kept_dead
        self.approximate = approximate  # layer -> channels treated as zero that are not exactly zero
        self.params_before, self.params_after = params
        self.check: dict | None = None
        self.audit: dict | None = None  # {"listed", "removed", "kept"} of the audit's dead filters and channels
        self.input_size: tuple[int, int] | None = None
        self.output: str | None = None

    @property
    def exact(self) -> bool:
        return not self.approximate

    @property
    def removed_filters(self) -> int:
        return sum(len(r.removed) for r in self.rows if r.op != "dense")

    @property
    def changed(self) -> bool:
        return bool(self.surgery.payloads)

    def record(self) -> dict:
        """What ``inspector.pruned`` in the pruned model's metadata says."""
        from .. import __version__

        return {
            "tool": f"inspector {__version__}",
            "source": os.path.basename(self.model.path),
            "exact": self.exact,
            "removed_filters": {r.name: r.removed for r in self.rows if r.removed and r.op != "dense"},
            "folded_constant_channels": {r.name: r.folded for r in self.rows if r.folded},
            "approximate": self.approximate,
            "params": [self.params_before, self.params_after],
        }

    def to_dict(self) -> dict:
        total = self.rows
        return {
            "model": self.model.path,
            "output": self.output,
            "exact": self.exact,
            "removed_filters": self.removed_filters,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "macs_before": sum(r.macs_before or 0 for r in total),
            "macs_after": sum(r.macs_after or 0 for r in total),
            "macs_input_size": list(self.input_size) if self.input_size else None,
            "layers": [r.to_dict() for r in self.rows],
            "dead_filters_kept": self.kept_dead,
            "approximate": self.approximate,
            "audit": self.audit,
            "computed_weights_stored": list(self.surgery.computed),
            "check": self.check,
        }

    def table(self) -> str:
        return render_table(self)

    def write(self, out: str, verify=None) -> str:
        """Write the pruned model to ``out`` atomically (onnx.checker on the written file, then ``verify``)."""
        from converters.writer import stamp, write_model

        model = self.surgery.model
        if self.changed:  # a model with nothing to remove comes out as it went in
            stamp(model, {METADATA_KEY: json.dumps(self.record(), sort_keys=True)})
        _typed_outputs(model, self.tracer.shapes)
        payloads = dict(self.surgery.payloads)
        try:
            write_model(model, out, verify=verify, payloads=payloads, source_folder=self.model.file.folder)
        except InspectorError as exc:
            if "onnx.checker" not in str(exc):
                raise
            raise InspectorError(_checker_blame(self.model.path, str(exc))) from None
        self.output = out
        return out


def _typed_outputs(model, shapes: dict) -> None:
    """Graph outputs declared without a shape (onnxruntime accepts them, onnx.checker does not) get their
    inferred rank, every dim left open."""
    for output in model.graph.output:
        tensor_type = output.type.tensor_type
        if output.type.HasField("tensor_type") and not tensor_type.HasField("shape") and output.name in shapes:
            tensor_type.shape.SetInParent()
            for _ in shapes[output.name]:
                tensor_type.shape.dim.add()


def _checker_blame(original: str, message: str) -> str:
    """Whose fault an onnx.checker failure is: the input model's, or the pruning's."""
    from converters.writer import _check

    detail = message.split("onnx.checker:", 1)[-1].strip()
    try:
        _check(original)
    except InspectorError:
        return (f"{os.path.basename(original)} itself does not pass onnx.checker ({detail}); prune writes only "
                "models that do: re-export it")
    return f"the pruned model does not pass onnx.checker ({detail}); please report this with the model"


def render_table(result: PruneResult) -> str:
    def count(n):
        return "-" if n is None else f"{n:,}"

    header = ("layer", "op", "filters", "params", "MACs", "removed")
    lines = []
    shown = result.rows
    if len(shown) > 20:  # a big model: the layers that changed; --json lists every layer
        shown = [r for r in result.rows if r.params_before != r.params_after or r.folded]
    for r in shown:
        filters = f"{r.filters_before}" if r.filters_before == r.filters_after else f"{r.filters_before}->{r.filters_after}"
        params = count(r.params_before) if r.params_before == r.params_after else \
            f"{count(r.params_before)}->{count(r.params_after)}"
        macs = count(r.macs_before) if r.macs_before == r.macs_after else f"{count(r.macs_before)}->{count(r.macs_after)}"
        removed = ", ".join(map(str, r.removed[:8])) + (" ..." if len(r.removed) > 8 else "")
        if r.folded:
            removed += f" (+{r.folded} constant folded)" if removed else f"{r.folded} constant folded"
        lines.append((r.name, r.op, filters, params, macs, removed))
    widths = [max(len(h), *(len(row[i]) for row in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in lines]
    if len(shown) < len(result.rows):
        out.append(f"({len(result.rows) - len(shown)} unchanged layers not shown; --json lists every layer)")
    macs_before = sum(r.macs_before or 0 for r in result.rows)
    macs_after = sum(r.macs_after or 0 for r in result.rows)
    shrink = 1 - result.params_after / result.params_before if result.params_before else 0.0
    out.append(f"removed {result.removed_filters} filters; model parameters {result.params_before:,} -> "
               f"{result.params_after:,} ({shrink:.1%} fewer); conv and dense MACs per image"
               + (f" at {result.input_size[0]}x{result.input_size[1]}" if result.input_size else "")
               + f" {macs_before:,} -> {macs_after:,}"
               + ("" if result.exact else "; APPROXIMATE (channels the audit found silent)"))
    if result.surgery.computed:
        names = result.surgery.computed
        out.append(f"{len(names)} weight tensor(s) computed in the graph (Cast -> Mul, DequantizeLinear, reshapes) "
                   f"are stored as their pruned values: {', '.join(names[:4])}{' ...' if len(names) > 4 else ''}")
    if result.audit is not None:
        audit = result.audit
        out.append(f"the audit lists {audit['listed']} dead filters and channels: removed {audit['removed']}, "
                   f"kept {audit['kept']}" + (" (reasons below)" if audit["kept"] else ""))
    for kept in result.kept_dead[:20]:
        out.append(f"kept dead {kept.get('unit', 'filter')} {kept['layer']}[{kept['filter']}]: {kept['reason']}")
    if len(result.kept_dead) > 20:
        reasons: dict[str, int] = {}
        for kept in result.kept_dead[20:]:
            reasons[_reason_kind(kept["reason"])] = reasons.get(_reason_kind(kept["reason"]), 0) + 1
        out.append(f"... and {len(result.kept_dead) - 20} more kept (see --json): " + "; ".join(
            f"{count} {why}" for why, count in sorted(reasons.items(), key=lambda item: -item[1])[:4]))
    return "\n".join(out)


# float, float16, double, bfloat16, and the integer types quantized weights are stored in (uint8, int8, uint16,
# int16, uint4, int4): weights, not shapes or indices (int32, int64)
def _reason_kind(reason: str) -> str:
    """A reason without the node it names, to count alike reasons together."""
    import re

    return re.sub(r"\b[A-Za-z]+ '[^']*'", "a node", reason)


_WEIGHT_TYPES = (1, 10, 11, 16, 2, 3, 4, 5, 21, 22)


def _param_count(model_proto) -> int:
    """Weights in initializers and Constant nodes (Paddle exports keep every weight in a Constant)."""
    tensors = list(model_proto.graph.initializer)
    for node in model_proto.graph.node:
        if node.op_type == "Constant":
            tensors += [a.t for a in node.attribute if a.name == "value"]
    return sum(int(np.prod(t.dims)) if len(t.dims) else 1 for t in tensors if t.data_type in _WEIGHT_TYPES)


def _overrides(model, dead: dict | None, channels: bool):
    """tensor -> channel indices to treat as zero (only with --channels), and the audit's layer names."""
    if not dead:
        return {}
    by_name = {layer.name: layer for layer in model.layers}
    unknown = [name for name in dead if name not in by_name]
    if unknown:
        raise InspectorError(f"the audit names layers this model does not have ({', '.join(unknown[:3])}); "
                             "was it written for another model?")
    for name, found in dead.items():  # indices the layer does not have: the audit is of another model
        filters = by_name[name].filters
        beyond = [i for i in (*found["filters"], *found["channels"]) if filters and i >= filters]
        if beyond:
            raise InspectorError(f"the audit marks channel {beyond[0]} of layer '{name}' dead, but the layer has {filters} "
                                 "filters; was it written for another model?")
    if not channels:
        return {}
    out = {}
    for name, found in dead.items():
        indices = sorted(set(found["filters"]) | set(found["channels"]))
        if indices:
            out.setdefault(by_name[name].output, []).extend(indices)
    return out


def prune(model, dead: dict | None = None, channels: bool = False, size=None) -> PruneResult:
    """Plan and cut the dead filters of ``model`` (an ``inspector.Model`` or a path).

    ``dead``: ``{layer: {"filters": [...], "channels": [...]}}`` from an audit
    (``audit_input.dead_by_layer``). Without ``channels`` only exact removals
    happen (zero filters, constant channels folded where exact); with it, the
    audit's dead filters and channels are treated as zero too (approximate).
    ``size`` (H, W): the input size MACs are counted at where the model leaves it open (default: its
    metadata's, else 224x224).
    """
    from ..api import Model, load

    if not isinstance(model, Model):
        model = load(model)
    model.require_layers()
    overrides = _overrides(model, dead, channels)
    light = model.file.model
    probe, input_size = _with_static_input(model, size)
    try:
        tracer = Tracer(model.file, {layer.node_index: layer.name for layer in model.layers},
                        inferred_shapes(probe), overrides, _dead_by_weights(model)).run()
        plan = tracer.plan()
        surgery = apply(plan)
    except (ValueError, IndexError) as exc:
        name = os.path.basename(model.path)
        one_d = [layer.name for layer in model.layers if len(layer.weight_shape or ()) == 3]
        if one_d:  # audio and sensor models: the tracer follows (N, C, H, W) maps
            raise InspectorError(f"cannot prune {name}: prune follows 2-D convs over images, and its "
                                 f"{len(one_d)} conv layer(s) are 1-D (e.g. '{one_d[0]}'); `inspector layers` and "
                                 "`inspector filters` read them") from None
        # Shapes that contradict each other: onnxruntime would refuse the model too.
        raise InspectorError(f"cannot prune {name}: its tensors' shapes do not fit "
                             f"together ({exc}); does onnxruntime run it?") from None
    rows = _rows(model, tracer, surgery)
    kept_dead = _kept_dead(model, tracer, plan, dead, channels)
    approximate = {}
    for layer in model.layers:
        carrier = tracer.carriers.get(layer.output)
        if layer.output in overrides and carrier is not None:
            exact_zero = tracer.exact_zero.get(layer.output, set())
            loose = [i for i in overrides[layer.output] if i not in exact_zero and i < len(carrier.ids)
                     and not plan.reason(carrier.ids[i])]
            if loose:
                approximate[layer.name] = sorted(set(loose))
    params = (_param_count(light), _param_count(surgery.model))
    result = PruneResult(model, tracer, plan, surgery, rows, kept_dead, approximate, params)
    result.input_size = input_size
    result.audit = audit_accounting(dead, kept_dead)
    return result


def _dead_by_weights(model) -> dict[int, np.ndarray]:
    """The audit's dead-by-weights verdict per conv node (zero or effectively zero filters), so that exact pruning
    removes what the audit counts; layers whose weights cannot be read are left to the tracer."""
    from ..audit.weights import dead_filter_masks

    read = []
    for layer in model.layers:
        if layer.op != "Conv":
            continue
        try:
            weights, bias = model.graph.weights(layer)
        except InspectorError:
            continue
        read.append((layer, np.asarray(weights), bias))
    return dead_filter_masks(model, read)


def _with_static_input(model, size):
    """The light model with open input dims fixed (batch 1, the metadata's or --size's spatial size), so that
    shape inference reaches every layer: MACs are then counted per image at that size."""
    import onnx

    try:
        spec = model.input
        height, width = model.input_size(size)
    except InspectorError:
        return model.file.model, None
    probe = onnx.ModelProto()
    probe.CopyFrom(model.file.model)
    entry = next(i for i in probe.graph.input if i.name == spec.name)
    spatial = (2, 3) if spec.layout == "NCHW" else (1, 2)
    dims = entry.type.tensor_type.shape.dim
    for position, value in ((0, 1), (spatial[0], height), (spatial[1], width)):
        if not dims[position].HasField("dim_value") or dims[position].dim_value <= 0:
            dims[position].Clear()
            dims[position].dim_value = value
    return probe, (height, width)


def _rows(model, tracer, surgery) -> list[LayerRow]:
    from ..graph import source_name

    rows = []
    spatial = {}
    for index, node in enumerate(tracer.nodes):
        dims = tracer.shapes.get(node.output[0]) if node.output else None
        spatial[index] = int(np.prod(dims[2:])) if dims and all(isinstance(d, int) for d in dims[2:]) else None
    for layer in model.layers:
        index = layer.node_index
        node = tracer.nodes[index]
        before = tuple(layer.weight_shape)
        after = surgery.weight_shapes.get(index, (before, before))[1]
        if not before:
            continue
        has_bias = bool(layer.bias_input) or index in surgery.folded
        params_before = int(np.prod(before)) + (before[0] if layer.bias_input else 0)
        params_after = int(np.prod(after)) + (after[0] if has_bias else 0)
        size = spatial.get(index) if node.op_type == "Conv" else None
        rows.append(LayerRow(layer.name, layer.op, layer.filters, after[0] if layer.op != "ConvTranspose" else layer.filters,
                             params_before, params_after,
                             None if size is None else size * int(np.prod(before)),
                             None if size is None else size * int(np.prod(after)),
                             surgery.removed_filters.get(index, []), surgery.folded.get(index, 0)))
    conv_nodes = {layer.node_index for layer in model.layers}
    for index, (before, after) in surgery.weight_shapes.items():
        if index in conv_nodes:
            continue
        node = tracer.nodes[index]
        rows.append(LayerRow(source_name(node.name) if node.name else node.output[0], "dense", before[0], after[0],
                             int(np.prod(before)), int(np.prod(after)), int(np.prod(before)), int(np.prod(after)),
                             [], surgery.folded.get(index, 0)))
    return rows


def _kept_dead(model, tracer, plan, dead, channels) -> list[dict]:
    """Filters dead by their weights, and every filter or channel the audit lists, that stay, and why: each one
    the audit lists is either removed or here (``audit_accounting`` counts both)."""
    kept = []
    seen = set()
    for source in tracer.sources:
        for filter_index in np.flatnonzero(source.zero_weights):
            reason = plan.reason(source.ids[filter_index])
            if reason:
                kept.append({"layer": source.name, "filter": int(filter_index), "reason": reason, "unit": "filter"})
                seen.add((source.name, int(filter_index)))
    layers = {layer.name: layer for layer in model.layers}
    for name, found in (dead or {}).items():
        for filter_index in sorted(set(found["filters"]) | set(found["channels"])):
            if (name, filter_index) in seen:
                continue
            seen.add((name, filter_index))
            why = _fate(tracer, plan, layers[name], filter_index)
            if why is None:
                continue  # removed
            if not channels and _varies(tracer, layers[name], filter_index):
                why = "not exactly zero (the audit's norm or image rule); --channels removes it, --check measures it"
            unit = "filter" if filter_index in found["filters"] else "channel"
            kept.append({"layer": name, "filter": int(filter_index), "reason": why, "unit": unit})
        for channel in found.get("not_confirmed", []):
            if (name, channel) not in seen and _fate(tracer, plan, layers[name], channel) is not None:
                seen.add((name, channel))  # (one the exact rules remove anyway, constant or zero, is not kept)
                kept.append({"layer": name, "filter": int(channel), "unit": "channel", "reason":
                             "silent on the audit's images but not confirmed by its verification (it answered a "
                             "held-out image, peaked near its threshold, or its removal moved the outputs there)"})
    return kept


def _fate(tracer, plan, layer, index: int) -> str | None:
    """None when channel ``index`` of ``layer`` goes; else why it stays."""
    carrier = tracer.carriers.get(layer.output) or tracer.carriers.get(layer.conv_output)
    if carrier is None or index >= len(carrier.ids):
        if layer.op == "ConvTranspose":
            return "a transposed conv's output channels are not traced by the pruning rules"
        if layer.quantization:
            return f"its weights are quantized ({layer.quantization}) inside the conv op"
        if layer.groups > 1:
            return f"grouped conv (groups={layer.groups}) whose channels are not traced"
        return "its layer's channels are not traced (weights computed at run time)"
    root = tracer.uf.find(int(carrier.ids[index]))
    if root in plan.removed:
        return None
    return plan.kept.get(root) or "kept by the pruning rules"


def _varies(tracer, layer, index: int) -> bool:
    """The channel is not a known constant (its filter is not exactly zero)."""
    carrier = tracer.carriers.get(layer.output) or tracer.carriers.get(layer.conv_output)
    return carrier is None or index >= len(carrier.values) or bool(np.isnan(carrier.values[index]))


def audit_accounting(dead: dict | None, kept: list[dict]) -> dict | None:
    """{"listed", "removed", "kept"}: the audit's dead filters and channels, each removed or kept with a reason."""
    if dead is None:
        return None
    listed = {(name, i) for name, found in dead.items()
              for i in set(found["filters"]) | set(found["channels"]) | set(found.get("not_confirmed", []))}
    kept_units = {(k["layer"], k["filter"]) for k in kept} & listed
    return {"listed": len(listed), "removed": len(listed) - len(kept_units), "kept": len(kept_units)}
