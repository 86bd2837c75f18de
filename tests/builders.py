"""Tiny ONNX models built in memory, and an independent NumPy convolution to check them against."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def model(nodes, inputs, outputs, initializers=(), opset=OPSET, metadata=None) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    for key, value in (metadata or {}).items():
        entry = m.metadata_props.add()
        entry.key, entry.value = key, value

    return m


def image_input(name="x", shape=(1, 3, 16, 16), elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, list(shape))


def out(name):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, None)


def conv_relu_nchw(seed=0, channels=(3, 8, 16), size=16):
    """Two Conv+Relu layers named like torch.onnx, weights as initializers."""
    r = rng(seed)
    w1 = r.standard_normal((channels[1], channels[0], 3, 3)).astype(np.float32)
    b1 = r.standard_normal(channels[1]).astype(np.float32)
    w2 = r.standard_normal((channels[2], channels[1], 3, 3)).astype(np.float32) * 0.3
    b2 = r.standard_normal(channels[2]).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="/features/features.0/Conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="/features/features.1/Relu"),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="/features/features.2/Conv",
                         pads=[0, 0, 0, 0], strides=[2, 2]),
        helper.make_node("Relu", ["c2"], ["y"], name="/features/features.3/Relu"),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    m = model(nodes, [image_input(shape=(1, channels[0], size, size))], [out("y")], inits)
    return m, {"w1": w1, "b1": b1, "w2": w2, "b2": b2}


def tf2onnx_like_nhwc(seed=1, size=12):
    """NHWC input, Transposes around each conv, tf2onnx node names (Keras 3 '_1' scopes)."""
    r = rng(seed)
    w1 = r.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b1 = r.standard_normal(4).astype(np.float32)
    w2 = r.standard_normal((6, 4, 1, 1)).astype(np.float32)
    b2 = r.standard_normal(6).astype(np.float32)
    nodes = [
        helper.make_node("Transpose", ["x"], ["x_nchw"], perm=[0, 3, 1, 2], name="model_1/block1_conv1_1/convolution__6"),
        helper.make_node("Conv", ["x_nchw", "w1", "b1"], ["c1"], name="model_1/block1_conv1_1/BiasAdd", pads=[1, 1, 1, 1]),
        helper.make_node("Transpose", ["c1"], ["c1_nhwc"], perm=[0, 2, 3, 1], name="model_1/block1_conv1_1/BiasAdd__9"),
        helper.make_node("Relu", ["c1_nhwc"], ["r1"], name="model_1/block1_conv1_1/Relu"),
        helper.make_node("Transpose", ["r1"], ["r1_nchw"], perm=[0, 3, 1, 2], name="model_1/block1_conv2_1/convolution__12"),
        helper.make_node("Conv", ["r1_nchw", "w2", "b2"], ["c2"], name="model_1/block1_conv2_1/BiasAdd"),
        helper.make_node("Transpose", ["c2"], ["c2_nhwc"], perm=[0, 2, 3, 1], name="model_1/block1_conv2_1/BiasAdd__15"),
        helper.make_node("Sigmoid", ["c2_nhwc"], ["y"], name="model_1/block1_conv2_1/Sigmoid"),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))]
    m = model(nodes, [image_input(shape=(1, size, size, 3))], [out("y")], inits)
    return m, {"w1": w1, "b1": b1, "w2": w2, "b2": b2}


def constant_weights(seed=2):
    """Weights in Constant nodes, as some exporters write them."""
    r = rng(seed)
    w = r.standard_normal((5, 3, 3, 3)).astype(np.float32)
    b = r.standard_normal(5).astype(np.float32)
    nodes = [
        helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "w_value")),
        helper.make_node("Constant", [], ["b"], value=numpy_helper.from_array(b, "b_value")),
        helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("LeakyRelu", ["c"], ["y"], alpha=0.1),
    ]
    return model(nodes, [image_input(shape=(1, 3, 10, 10))], [out("y")]), {"w": w, "b": b}


def grouped_and_depthwise(seed=3):
    """A grouped conv (groups=2) and a depthwise conv (groups=channels), then a SiLU x*sigmoid(x)."""
    r = rng(seed)
    wg = r.standard_normal((8, 2, 3, 3)).astype(np.float32)  # 4 in -> 8 out, groups 2
    wd = r.standard_normal((8, 1, 3, 3)).astype(np.float32)  # depthwise on 8 channels
    bd = r.standard_normal(8).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["x", "wg"], ["cg"], name="grouped", group=2, pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["cg", "wd", "bd"], ["cd"], name="depthwise", group=8, pads=[1, 1, 1, 1],
                         dilations=[2, 2], strides=[1, 1]),
        helper.make_node("Sigmoid", ["cd"], ["sig"]),
        helper.make_node("Mul", ["cd", "sig"], ["y"]),
    ]
    inits = [numpy_helper.from_array(a, n) for a, n in ((wg, "wg"), (wd, "wd"), (bd, "bd"))]
    m = model(nodes, [image_input(shape=(1, 4, 9, 9))], [out("y")], inits)
    return m, {"wg": wg, "wd": wd, "bd": bd}


def conv_transpose(seed=4):
    r = rng(seed)
    w = r.standard_normal((3, 4, 3, 3)).astype(np.float32)  # (C_in, C_out, kH, kW)
    b = r.standard_normal(4).astype(np.float32)
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="upsample", strides=[2, 2])]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    return model(nodes, [image_input(shape=(1, 3, 5, 5))], [out("y")], inits), {"w": w, "b": b}


def qdq_conv(seed=5):
    """A QDQ-quantized conv: int8 weights with a per-channel scale behind DequantizeLinear."""
    r = rng(seed)
    wq = r.integers(-127, 128, size=(6, 3, 3, 3), dtype=np.int8)
    scale = (r.random(6).astype(np.float32) * 0.02 + 0.01)
    zero = np.zeros(6, dtype=np.int8)
    nodes = [
        helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zero"], ["w"], axis=0),
        helper.make_node("Conv", ["x", "w"], ["c"], name="qconv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"]),
    ]
    inits = [numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(scale, "w_scale"),
             numpy_helper.from_array(zero, "w_zero")]
    m = model(nodes, [image_input(shape=(1, 3, 8, 8))], [out("y")], inits)
    return m, {"w": wq.astype(np.float32) * scale[:, None, None, None]}


def save_external(m: onnx.ModelProto, path, location="weights.bin") -> None:
    """Save with every initializer in one external data file beside the model."""
    onnx.save_model(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=location, size_threshold=0)


# ------------------------------------------------------------------ NumPy reference

def conv2d(x, w, b=None, stride=1, pad=0, dilation=1, groups=1):
    """Plain NumPy NCHW convolution (cross-correlation), independent of onnxruntime."""
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad))).astype(np.float64)
    out_h = (x.shape[2] - dilation * (kh - 1) - 1) // stride + 1
    out_w = (x.shape[3] - dilation * (kw - 1) - 1) // stride + 1
    y = np.zeros((n, o, out_h, out_w))
    og = o // groups
    for g in range(groups):
        xs = x[:, g * cg:(g + 1) * cg]
        ws = w[g * og:(g + 1) * og].astype(np.float64)
        for i in range(kh):
            for j in range(kw):
                patch = xs[:, :, i * dilation: i * dilation + stride * out_h: stride,
                           j * dilation: j * dilation + stride * out_w: stride]
                y[:, g * og:(g + 1) * og] += np.einsum("nchw,oc->nohw", patch, ws[:, :, i, j])
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    return y


def conv_transpose2d(x, w, b=None, stride=1):
    """NumPy ConvTranspose, no padding, groups 1: scatter each input pixel's kernel."""
    n, c, h, wd = x.shape
    _, o, kh, kw = w.shape
    y = np.zeros((n, o, (h - 1) * stride + kh, (wd - 1) * stride + kw))
    for i in range(h):
        for j in range(wd):
            y[:, :, i * stride:i * stride + kh, j * stride:j * stride + kw] += np.einsum(
                "nc,cokl->nokl", x[:, :, i, j].astype(np.float64), w.astype(np.float64))
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    return y


def relu(x):
    return np.maximum(x, 0)


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def qlinear_conv(seed=6):
    """A QLinearConv (uint8 activations, int8 weights), as onnxruntime's static quantizer writes."""
    r = rng(seed)
    wq = r.integers(-100, 100, size=(4, 3, 3, 3), dtype=np.int8)
    consts = {
        "x_scale": np.float32(0.02), "x_zero": np.uint8(128), "w_scale": np.float32(0.01),
        "w_zero": np.int8(0), "y_scale": np.float32(0.05), "y_zero": np.uint8(10),
    }
    bias = r.integers(-500, 500, size=4).astype(np.int32)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"]),
        helper.make_node("QLinearConv", ["xq", "x_scale", "x_zero", "wq", "w_scale", "w_zero",
                                         "y_scale", "y_zero", "bias"], ["yq"], name="qlconv", pads=[1, 1, 1, 1]),
        helper.make_node("DequantizeLinear", ["yq", "y_scale", "y_zero"], ["y"]),
    ]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()]
    inits += [numpy_helper.from_array(wq, "wq"), numpy_helper.from_array(bias, "bias")]
    m = model(nodes, [image_input(shape=(1, 3, 6, 6))], [out("y")], inits)
    return m, {"w": wq.astype(np.float32) * 0.01}


def unfolded_bn(seed=7):
    """What Paddle and torch-in-training-mode exports look like: Conv -> BatchNormalization -> Relu,
    and Conv -> Add(constant bias) -> Mul(constant scale), with no activation after it,
    and a residual Add (not a constant) that must not be followed."""
    r = rng(seed)
    w1 = r.standard_normal((6, 3, 3, 3)).astype(np.float32) * 0.4
    gamma, beta = r.uniform(0.5, 1.5, 6).astype(np.float32), r.standard_normal(6).astype(np.float32)
    mean, var = r.standard_normal(6).astype(np.float32) * 0.1, r.uniform(0.5, 2.0, 6).astype(np.float32)
    w2 = r.standard_normal((6, 6, 1, 1)).astype(np.float32) * 0.4
    bias2 = r.standard_normal((1, 6, 1, 1)).astype(np.float32)
    scale2 = r.uniform(0.5, 2.0, (1, 6, 1, 1)).astype(np.float32)
    w3 = r.standard_normal((6, 6, 1, 1)).astype(np.float32) * 0.4
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c1", "gamma", "beta", "mean", "var"], ["bn1"], name="bn1",
                         epsilon=1e-5),
        helper.make_node("Relu", ["bn1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("Add", ["c2", "bias2"], ["a2"], name="bias_add2"),
        helper.make_node("Mul", ["scale2", "a2"], ["m2"], name="scale2"),
        helper.make_node("Conv", ["m2", "w3"], ["c3"], name="conv3"),
        helper.make_node("Add", ["c3", "m2"], ["y"], name="residual"),
    ]
    arrays = dict(w1=w1, gamma=gamma, beta=beta, mean=mean, var=var, w2=w2, bias2=bias2, scale2=scale2, w3=w3)
    inits = [numpy_helper.from_array(a, n) for n, a in arrays.items()]
    return model(nodes, [image_input(shape=(1, 3, 10, 10))], [out("y")], inits), arrays


def random_photo(path, height=40, width=48, seed=0) -> str:
    """A noise picture written with Pillow (format from the suffix); returns its path as str."""
    from PIL import Image

    Image.fromarray(rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
    return str(path)


def maps_through_cli(model_path, image, folder) -> dict:
    """Every conv layer's map as ``inspector maps --all --npz`` saves it, via the real CLI entry point."""
    import os

    from inspector import cli

    npz = os.path.join(str(folder), "maps.npz")
    code = cli.main(["maps", str(model_path), str(image), "--all", "--npz", npz, "--no-png",
                     "-o", os.path.join(str(folder), "png")])
    assert code == 0, f"inspector maps exited {code}"
    with np.load(npz) as data:
        return {name: data[name] for name in data.files}


def quantize_qdq(float_path, out_path, inputs: np.ndarray, input_name: str = "x") -> str:
    """onnxruntime's static QDQ int8 quantization (per channel), calibrated one input at a time on ``inputs``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.feeds = iter([{input_name: inputs[i:i + 1]} for i in range(len(inputs))])

        def get_next(self):
            return next(self.feeds, None)

    quantize_static(float_path, out_path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    return out_path


def bench_module(filename: str, name: str):
    """A script of bench/ (``filename``) loaded as module ``name``: the tests that check a figure the bench
    also measures use the bench's own code for it."""
    import importlib.util
    import os

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", filename)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
