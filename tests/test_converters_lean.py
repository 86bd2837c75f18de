"""The converters' memory-lean paths: the writer's skeleton check, torch's state-as-inputs export."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import builders
from converters import writer
from inspector.errors import InspectorError


def _headers_and_payloads(m, arrays):
    """``m`` with its initializers as headers only (name, type, dims) and their arrays as payloads."""
    payloads = {}
    for init in m.graph.initializer:
        payloads[init.name] = arrays[init.name]
        init.ClearField("raw_data")
        del init.float_data[:]
    return m, payloads


def test_written_file_runs_and_its_skeleton_is_the_file_less_raw_data(tmp_path):
    import onnxruntime as ort

    m, arrays = builders.conv_relu_nchw()
    del m.graph.output[:]  # the checker wants the output's shape
    m.graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 7, 7]))
    m, payloads = _headers_and_payloads(m, arrays)
    path = writer.write_model(m, str(tmp_path / "m.onnx"), payloads=dict(payloads))

    x = builders.rng(9).standard_normal((1, 3, 16, 16)).astype(np.float32)
    hidden = builders.relu(builders.conv2d(x, arrays["w1"], arrays["b1"], pad=1))
    expected = builders.relu(builders.conv2d(hidden, arrays["w2"], arrays["b2"], stride=2))
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)

    skeleton, raw_sizes = writer._read_skeleton(path)
    loaded = onnx.load(path)
    assert raw_sizes == {name: a.nbytes for name, a in arrays.items()}
    for init in loaded.graph.initializer:
        init.ClearField("raw_data")
    assert skeleton == loaded
    onnx.checker.check_model(path)  # the reference the skeleton check stands in for
    writer._check(path)


def _big_conv_model(w_bytes: bytes, extra_nodes=()):
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4, 3, 3, 3], raw_data=w_bytes)
    nodes = [helper.make_node("Conv", ["x", "w"], ["y"], name="conv"), *extra_nodes]
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])
    return builders.model(nodes, [builders.image_input(shape=(1, 3, 8, 8))], [y], [w])


def test_skeleton_check_refuses_raw_data_of_the_wrong_size(save):
    path = save(_big_conv_model(b"\0" * (4 * 27 * 4 - 4)))
    with pytest.raises(onnx.checker.ValidationError, match="raw_data size"):
        onnx.checker.check_model(path)
    with pytest.raises(InspectorError, match="raw_data"):
        writer._check(path)


def test_skeleton_check_refuses_a_graph_the_checker_refuses(save):
    dangling = helper.make_node("Relu", ["nowhere"], ["z"], name="dangling")
    path = save(_big_conv_model(b"\0" * (4 * 27 * 4), [dangling]))
    with pytest.raises(onnx.checker.ValidationError, match="nowhere"):
        onnx.checker.check_model(path)
    with pytest.raises(InspectorError, match="onnx.checker.*nowhere"):
        writer._check(path)


def test_skeleton_check_refuses_a_truncated_file(save):
    path = save(_big_conv_model(np.ones(4 * 27, np.float32).tobytes()))
    writer._check(path)
    with open(path, "r+b") as handle:
        handle.truncate(handle.seek(0, 2) - 40)
    with pytest.raises(InspectorError, match="broken"):
        writer._check(path)


def test_torch_export_traces_state_as_inputs_and_gives_the_module_back(tmp_path):
    torch = pytest.importorskip("torch")
    import onnxruntime as ort

    from converters import torch_convert
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                          nn.Conv2d(8, 8, 3), nn.ReLU())
            self.head = nn.Linear(8, 8)
            self.tail = nn.Linear(8, 8)
            self.tail.weight = self.head.weight  # tied: one input, under its first name
            self.register_buffer("shift", torch.randn(8), persistent=False)  # traced as a constant
            self.scale = nn.Parameter(torch.rand(8) + 0.5)  # an op on a parameter: folded by our pass

        def forward(self, x):
            return self.tail(self.head(self.features(x).mean((2, 3))) * self.scale.exp()) + self.shift

    torch.manual_seed(0)
    net = Net().eval()
    with torch.no_grad():
        net.features[1].running_mean.uniform_(-1, 1)
        net.features[1].running_var.uniform_(0.5, 2)
    state = net.state_dict(keep_vars=True)
    x = torch.randn(2, 3, 12, 12)
    with torch.no_grad():
        expected = net(x).numpy()

    model, layers, payloads = torch_convert.export(net, (1, 3, 12, 12))

    after = net.state_dict(keep_vars=True)
    assert list(after) == list(state) and all(after[k] is state[k] for k in state)
    assert "forward" not in net.__dict__
    assert layers == ["features.0", "features.3"]
    assert [i.name for i in model.graph.input] == ["input"]
    path = writer.write_model(model, str(tmp_path / "net.onnx"), payloads=payloads)
    got = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"input": x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_torch_module_is_given_back_when_the_export_fails():
    torch = pytest.importorskip("torch")
    from converters import torch_convert
    from torch import nn

    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            raise ValueError("no")

    net = Broken().eval()
    instance_forward = net.forward
    net.forward = instance_forward  # an instance attribute of its own: kept as it was
    weight = net.conv.weight
    with pytest.raises(InspectorError, match="torch.onnx.export failed"):
        torch_convert.export(net, (1, 3, 8, 8))
    assert net.conv.weight is weight and net.__dict__["forward"] is instance_forward
    assert isinstance(net.conv._parameters["weight"], torch.nn.Parameter)
