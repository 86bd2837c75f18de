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
