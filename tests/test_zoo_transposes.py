"""bench/zoo.py's Transpose accounting (converters/transposes.py): layout Transposes our passes promise to
remove (a pair NCHW -> NHWC -> NCHW joined by per-position ops) against the model's own (attention's
permutes), on tiny graphs built with onnx.helper and one tiny torch attention module through the converter."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from converters.transposes import classify  # noqa: E402


def _model(nodes, inits=()):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])
    y = helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], initializer=list(inits)))


W = numpy_helper.from_array(np.zeros((4, 4, 1, 1), np.float32), "w")
M = numpy_helper.from_array(np.zeros((4, 4), np.float32), "m")
T = lambda i, o, perm: helper.make_node("Transpose", [i], [o], perm=perm)  # noqa: E731


def test_convnext_island_left_is_layout():
    # x -> Conv -> T(0,2,3,1) -> LayerNorm-ish ReduceMean/Sub -> MatMul(m) -> T(0,3,1,2)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), T("c", "t1", [0, 2, 3, 1]),
             helper.make_node("MatMul", ["t1", "m"], ["mm"]), helper.make_node("Relu", ["mm"], ["r"]),
             T("r", "t2", [0, 3, 1, 2])]
    assert classify(_model(nodes, [W, M])) == (2, 0)


def test_tf2onnx_pair_around_a_conv_is_layout():
    nodes = [T("x", "t1", [0, 3, 1, 2]), helper.make_node("Conv", ["t1", "w"], ["c"]), T("c", "t2", [0, 2, 3, 1])]
    assert classify(_model(nodes, [W])) == (2, 0)


def test_attention_permutes_are_the_models_own():
    shape = numpy_helper.from_array(np.array([1, 4, 2, 32], np.int64), "s")
    nodes = [helper.make_node("Reshape", ["x", "s"], ["r"]), T("r", "t1", [0, 2, 1, 3]),
             helper.make_node("MatMul", ["t1", "t1"], ["a"]), T("a", "t2", [0, 2, 1, 3])]
    assert classify(_model(nodes, [shape])) == (0, 2)


def test_channels_last_stem_through_a_residual_from_attention_is_own():
    # Swin's stem: Conv -> T(0,2,3,1); the residual Add brings in a Reshape'd branch; T(0,3,1,2) at the end
    shape = numpy_helper.from_array(np.array([1, 8, 8, 4], np.int64), "s")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), T("c", "t1", [0, 2, 3, 1]),
             helper.make_node("Reshape", ["t1", "s"], ["attn"]), helper.make_node("Add", ["t1", "attn"], ["res"]),
             T("res", "t2", [0, 3, 1, 2])]
    assert classify(_model(nodes, [W, shape])) == (0, 2)


def test_attention_module_through_the_converter_has_no_layout_transposes(tmp_path):
    torch = pytest.importorskip("torch")
    from torch import nn

    import converters

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.attention = nn.MultiheadAttention(8, 2, batch_first=True)

        def forward(self, x):
            y = self.conv(x)
            tokens = y.flatten(2).transpose(1, 2)
            return self.attention(tokens, tokens, tokens)[0].mean(1)

    out = tmp_path / "attn.onnx"
    result = converters.convert_torch(Block, (1, 3, 8, 8), str(out), preprocess="raw")
    layout, own = classify(onnx.load(str(out)))
    assert result.transposes == layout + own and own > 0 and layout == 0


def test_zoo_fails_only_on_layout_transposes():
    import importlib.util
    import os

    spec = importlib.util.spec_from_file_location("zoo", os.path.join(os.path.dirname(__file__), "..", "bench", "zoo.py"))
    zoo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(zoo)
    row = {"exit": 0, "foreign_stderr": [], "features": False, "transposes": 97, "layout_transposes": 0,
           "own_transposes": 97}
    assert zoo.outcome(row) == "ok, 97 of its own Transposes"
    assert zoo.outcome(dict(row, layout_transposes=2, own_transposes=95)).startswith("FAIL: 2 layout")


def test_a_channels_last_torch_models_permutes_around_its_conv_are_its_own():
    # timm's MambaOut: channels-last blocks; x.permute(0, 3, 1, 2) -> depthwise Conv -> permute(0, 2, 3, 1).
    # The same pair from tf2onnx is layout (test above); from torch it is written in the model's forward
    nodes = [T("x", "t1", [0, 3, 1, 2]), helper.make_node("Conv", ["t1", "w"], ["c"]), T("c", "t2", [0, 2, 3, 1])]
    model = _model(nodes, [W])
    helper.set_model_props(model, {"inspector.source_framework": "torch"})
    assert classify(model) == (0, 2)
    # and a channels-last island in a torch model's NCHW map (ConvNeXt's) stays layout
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), T("c", "t1", [0, 2, 3, 1]),
             helper.make_node("MatMul", ["t1", "m"], ["mm"]), T("mm", "t2", [0, 3, 1, 2])]
    model = _model(nodes, [W, M])
    helper.set_model_props(model, {"inspector.source_framework": "torch"})
    assert classify(model) == (2, 0)


def test_a_torch_pair_whose_values_are_read_elsewhere_too_is_the_models_own():
    # GCViT's stem: LayerNorm2d (permute, LayerNorm, permute back) whose channels-last output also feeds the
    # next (channels-last) blocks: both layouts are used, and no pass can take the pair out
    ln_w = numpy_helper.from_array(np.ones(4, np.float32), "g")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), T("c", "t1", [0, 2, 3, 1]),
             helper.make_node("LayerNormalization", ["t1", "g"], ["ln"], axis=-1), T("ln", "t2", [0, 3, 1, 2]),
             helper.make_node("Shape", ["ln"], ["s"]), helper.make_node("Reshape", ["t2", "s"], ["y"])]
    model = _model(nodes, [W, ln_w])
    helper.set_model_props(model, {"inspector.source_framework": "torch"})
    assert classify(model) == (0, 2)
    del model.graph.node[4:]  # read only through the closing Transpose: layout, as our pass removes it
    model.graph.output[0].name = "t2"
    assert classify(model) == (2, 0)
