"""The explorer's HTTP server: 127.0.0.1 only, a token on every API call, the Host header checked.

Security (issue 22, HOUSE_STYLE "A local server"): the token is random per run, given to the page in the
URL's fragment (never sent to the server, so never in a log) and required in the ``X-Inspector-Token``
header of every ``/api/`` call; a Host other than ``127.0.0.1:PORT`` or ``localhost:PORT`` (DNS rebinding)
gets 421; no path from the client is opened (the three static files are fixed names, models and images
are indices into what the command line gave); uploads are read into memory up to a cap (413 beyond);
every answer carries a Content-Security-Policy that allows this origin only.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, unquote, urlsplit

import numpy as np

from ..errors import InspectorError
from .state import MAX_UPLOAD_BYTES, Explorer, verdict

TOKEN_HEADER = "X-Inspector-Token"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'none'; "
       "frame-ancestors 'none'")
STATIC = {"/": ("index.html", "text/html; charset=utf-8"),
          "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
          "/static/app.css": ("app.css", "text/css; charset=utf-8")}


def _static(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


class Handler(BaseHTTPRequestHandler):
    server: "ExplorerServer"
    protocol_version = "HTTP/1.1"
    # Headers and body go out as two writes: with Nagle's algorithm the second waits for the client's delayed
    # ACK (40 ms on Linux) on every small answer, a cached filter picture included.
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # noqa: A002 - no request line (or anything else) is logged
        pass

    # ------------------------------------------------------------ answers

    def _send(self, status: int, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Security-Policy", CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, data, status: int = 200) -> None:
        self._send(status, json.dumps(data).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self.close_connection = True
        self._json({"error": message}, status)

    def _array(self, array: np.ndarray) -> None:
        """float32 little-endian values, the shape in ``X-Shape`` (C,H,W or F,I,kH,kW)."""
        array = np.ascontiguousarray(array, dtype="<f4")
        self._send(200, array.tobytes(), "application/octet-stream",
                   {"X-Shape": ",".join(map(str, array.shape))})

    # ------------------------------------------------------------- checks

    def _host_ok(self) -> bool:
        return self.headers.get("Host", "") in self.server.allowed_hosts

    def _token_ok(self) -> bool:
        given = self.headers.get(TOKEN_HEADER, "")
        return hmac.compare_digest(given.encode(), self.server.token.encode())

    def _guard(self) -> str | None:
        """The request's path when it may be answered, else None (the refusal is sent)."""
        if not self._host_ok():
            self._error(421, "unknown Host")
            return None
        path = urlsplit(self.path).path
        if path.startswith("/api/") and not self._token_ok():
            self._error(403, "missing or wrong token")
            return None
        return path

    # ------------------------------------------------------------- routes

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = self._guard()
        if path is None:
            return
        if path in STATIC:
            name, content_type = STATIC[path]
            self._send(200, _static(name), content_type)
            return
        if not path.startswith("/api/"):
            self._error(404, "not found")
            return
        query = {key: values[-1] for key, values in parse_qs(urlsplit(self.path).query).items()}
        self._api(path[len("/api/"):], query)

    def do_POST(self):
        path = self._guard()
        if path is None:
            return
        if path == "/api/jobs":
            try:
                length = int(self.headers.get("Content-Length", "0") or "0")
            except ValueError:
                length = -1
            if not 0 <= length <= 4096:  # a job takes no body: a small one is read and ignored
                self._error(413, "a job request has no body")
                return
            self.rfile.read(length)
            query = {key: values[-1] for key, values in parse_qs(urlsplit(self.path).query).items()}
            self._start_job(query)
            return
        if path != "/api/images":
            self._error(404, "not found")
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error(411, "Content-Length required")
            return
        if length > MAX_UPLOAD_BYTES:
            self._error(413, f"image over {MAX_UPLOAD_BYTES // (1024 * 1024)} MB")
            return
        if length <= 0:
            self._error(400, "empty upload")
            return
        data = self.rfile.read(length)
        name = unquote(self.headers.get("X-Image-Name", "uploaded image"))  # shown as text only
        try:
            image = self.server.explorer.upload(data, name)
        except InspectorError as exc:
            self._error(400, str(exc))
            return
        self._json({"id": image.id, "name": image.name})

    def do_PUT(self):
        self._guard() and self._error(405, "method not allowed")

    do_DELETE = do_PATCH = do_OPTIONS = do_PUT

    def _api(self, route: str, query: dict) -> None:
        explorer = self.server.explorer
        try:
            if route == "info":
                self._json(explorer.info())
                return
            state = explorer.models[int(query.get("model", "0"))]
            if route == "layers":
                self._json(state.layers_json())
            elif route == "filters":
                index = int(query["layer"])
                if query.get("format") == "raw":
                    self._array(state.filters_raw(index))
                else:
                    self._send(200, state.filters_png(index), "image/png")
            elif route == "maps":
                image = explorer.image(query["image"])
                fed = query.get("feeding", "own")
                if fed == "diff":  # as `inspector diff A B IMAGE` feeds it (model 0 is A, model 1 is B)
                    if explorer.pair is None:
                        raise KeyError("feeding")
                    index = int(query["layer"])
                    if state.index == 1:  # B's layer: the pair it belongs to
                        index = next(layer.pair.a.index for layer in explorer.pair.base().layers
                                     if layer.pair.b.index == index)
                    self._array(explorer.pair.side_maps(index, image, "ab"[state.index]))
                elif fed == "own":
                    self._array(state.layer_maps(int(query["layer"]), image))
                else:
                    raise KeyError("feeding")
            elif route == "outputs":
                self._json({"model": state.index, "image": query["image"],
                            "outputs": state.outputs(explorer.image(query["image"]))})
            elif route == "pairs":
                if explorer.pair is None:
                    raise KeyError("pairs")
                self._json(explorer.pair.base().to_dict())
            elif route == "diff":
                if explorer.pair is None:
                    raise KeyError("diff")
                self._json(explorer.pair.compare(explorer.image(query["image"])).to_dict())
            elif route == "jobs":
                if "id" in query:
                    self._json(explorer.jobs.get(query["id"]).to_dict())
                else:
                    self._json({"jobs": [job.to_dict() for job in explorer.jobs.all()]})
            elif route == "cam":
                result = state.cam(explorer.image(query["image"]), *_cam_choice(query))
                if query.get("format") == "raw":  # (H, W) in [0, 1] at the input size, as `cam --npz` saves it
                    self._array(result.cam)
                elif query.get("format") == "png":
                    from ..cam.picture import png_bytes

                    self._send(200, png_bytes(result.to_image()), "image/png")
                else:
                    self._json(result.to_dict())
            elif route == "audit":
                result = state.audit(explorer.photo_paths())
                data = result.to_dict()
                self._json({"images": data["images"]["count"],
                            "layers": [{"index": layer["index"], "name": layer["name"], "verdict": verdict(layer),
                                        "dead_filters": layer["dead_filters"],
                                        "dead_channels": layer["dead_channels"],
                                        "channels_judged": layer["channels_judged"]} for layer in data["layers"]]})
            else:
                self._error(404, "not found")
        except (KeyError, ValueError, IndexError, StopIteration):
            self._error(404, "no such model, layer, image or job")
        except InspectorError as exc:
            self._error(400, str(exc))

    def _start_job(self, query: dict) -> None:
        """``POST /api/jobs?kind=cam&model=M&image=I`` or ``?kind=audit&model=M``: the job's state (its id)."""
        explorer = self.server.explorer
        try:
            kind = query["kind"]
            state = explorer.models[int(query.get("model", "0"))]
            if kind == "cam":
                image = explorer.image(query["image"])
                choice = _cam_choice(query)
                job = explorer.jobs.start(kind, (kind, state.index, image.id, *choice), lambda: state.cam(image, *choice))
            elif kind == "audit":
                paths = explorer.photo_paths()
                job = explorer.jobs.start(kind, (kind, state.index), lambda: state.audit(paths))
            else:
                raise KeyError(kind)
        except (KeyError, ValueError, IndexError):
            self._error(404, "no such job kind, model or image")
            return
        self._json(job.to_dict(), 202)


def _cam_choice(query: dict) -> tuple:
    """(method, layer index, target) of a CAM request; absent or empty: the one `inspector cam` chooses."""
    layer = query.get("layer") or None
    return query.get("method") or None, None if layer is None else int(layer), query.get("target") or None


class ExplorerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, explorer: Explorer, port: int = 0, token: str | None = None):
        super().__init__(("127.0.0.1", port), Handler)
        self.explorer = explorer
        self.token = token or secrets.token_urlsafe(32)
        self.port = self.server_address[1]
        self.allowed_hosts = {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}

    @property
    def url(self) -> str:
        """The page's address; the token rides in the fragment, which browsers never send."""
        return f"http://127.0.0.1:{self.port}/#token={self.token}"

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="inspector-view", daemon=True)
        thread.start()
        return thread
