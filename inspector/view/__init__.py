"""``inspector view``: a local explorer in the browser over the library (layers, filters, maps, CAM, audit).

``serve(models, images, port)`` builds the state (``state.Explorer``) and the server (``server.ExplorerServer``,
127.0.0.1 only, token and Host checked); the page is three files under ``static/``, nothing from elsewhere.
"""

from .server import ExplorerServer
from .state import MAX_UPLOAD_BYTES, Explorer

__all__ = ["ExplorerServer", "Explorer", "MAX_UPLOAD_BYTES"]
