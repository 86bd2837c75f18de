"""The explorer started in a thread on a free port, and raw HTTP calls that set any Host and header."""

from __future__ import annotations

import http.client
import json

import numpy as np

import builders as b

HOSTILE = "<img src=x onerror=window.__pwned=1>"


def hostile_model(dead_filter: bool = True):
    """conv_relu_nchw with its first conv named as an HTML injection, and (optionally) filter 0 all zero."""
    m, weights = b.conv_relu_nchw(channels=(3, 8, 16), size=24)
    m.graph.node[0].name = f"/features/{HOSTILE}/Conv"
    if dead_filter:
        from onnx import numpy_helper

        w1 = weights["w1"].copy()
        w1[0] = 0
        for i, init in enumerate(m.graph.initializer):
            if init.name == "w1":
                m.graph.initializer[i].CopyFrom(numpy_helper.from_array(w1, "w1"))
        weights["w1"] = w1
    return m, weights


def start(models, images):
    from inspector.view import Explorer, ExplorerServer

    server = ExplorerServer(Explorer([str(m) for m in models], [str(i) for i in images], device="cpu"), 0)
    server.start()
    return server


class Client:
    def __init__(self, server):
        self.server = server
        self.port = server.port

    def call(self, path, *, token=True, host=None, method="GET", body=None, headers=None):
        """(status, headers, body bytes)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        connection.putheader("Host", host or f"127.0.0.1:{self.port}")
        if token is True:
            connection.putheader("X-Inspector-Token", self.server.token)
        elif token:
            connection.putheader("X-Inspector-Token", token)
        for key, value in (headers or {}).items():
            connection.putheader(key, value)
        if body is not None and "Content-Length" not in (headers or {}):
            connection.putheader("Content-Length", str(len(body)))
        connection.endheaders()
        if body is not None:
            connection.send(body)
        response = connection.getresponse()
        data = response.read()
        connection.close()
        return response.status, response.headers, data

    def json(self, path, **kwargs):
        status, _, data = self.call(path, **kwargs)
        assert status == 200, (status, data[:200])
        return json.loads(data)

    def array(self, path, **kwargs) -> np.ndarray:
        status, headers, data = self.call(path, **kwargs)
        assert status == 200, (status, data[:200])
        shape = tuple(int(n) for n in headers["X-Shape"].split(","))
        return np.frombuffer(data, dtype="<f4").reshape(shape)


CLASSES = ["cat", "dog", "owl", "fox"]


def classifier(seed=0, size=16):
    """x (1,3,16,16) -> conv1 3x3 + Relu (8) -> conv2 3x3 stride 2 + Relu (6) -> GlobalAveragePool -> Flatten
    -> Gemm (4 logits) -> Softmax "probs"; preprocessing raw /255 and four class names in the metadata."""
    import onnx
    from onnx import helper, numpy_helper

    from inspector import metadata as md

    r = b.rng(seed)
    arrays = {"w1": r.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.5,
              "b1": r.standard_normal(8).astype(np.float32) * 0.1,
              "w2": r.standard_normal((6, 8, 3, 3)).astype(np.float32) * 0.3,
              "b2": r.standard_normal(6).astype(np.float32) * 0.1 + 0.05,
              "wf": r.standard_normal((4, 6)).astype(np.float32),
              "bf": r.standard_normal(4).astype(np.float32) * 0.1}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2", pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    meta = {md.PREPROCESS: '{"mode": "raw", "scale": 0.00392156862745098}', md.CLASS_NAMES: json.dumps(CLASSES)}
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, size, size])
    inits = [numpy_helper.from_array(a, n) for n, a in arrays.items()]
    return b.model(nodes, [x], [b.out("probs")], inits, metadata=meta), arrays
