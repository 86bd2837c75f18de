from __future__ import annotations

import sys

from ..cli import Command, add_device


class View(Command):
    name = "view"
    help = "explore a model in the browser: layers, filters, feature maps, CAM and audit (a local server)"
    description = ("Start a local server on 127.0.0.1 and open the explorer in the browser: the conv layers with a "
                   "search box and the audit's verdict colours, a clicked layer's filters and, for a photo given "
                   "here (files or folders) or uploaded in the page, its feature maps with the value under the "
                   "cursor, the CAM (as `cam` chooses it, changeable) and the model's top outputs. With MODEL_B "
                   "the layers are paired as `diff` pairs them and both maps are shown with diff's per-layer SQNR "
                   "for the image. One warm onnxruntime session per model; ScoreCAM and the audit run in the "
                   "background with their progress on the page. The page needs no network; the address printed "
                   "carries a random token that every API call must present. Ctrl-C stops it.")

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", metavar="MODEL [MODEL_B] [IMAGE ...]",
                            help="one or two ONNX models (.onnx), then photos or folders of photos to pick from in the page")
        parser.add_argument("--port", type=int, default=0, metavar="N",
                            help="port on 127.0.0.1 (default: a free one)")
        parser.add_argument("--no-browser", action="store_true", help="print the address, do not open a browser")
        add_device(parser)

    def run(self, args) -> int:
        from ..errors import InspectorError
        from ..view import Explorer, ExplorerServer

        models = [path for path in args.paths if path.lower().endswith(".onnx")]
        images = [path for path in args.paths if not path.lower().endswith(".onnx")]
        if not models or args.paths[: len(models)] != models:
            raise InspectorError("give the model(s) first, then the images: inspector view MODEL [MODEL_B] [IMAGE ...]")
        if len(models) > 2:
            raise InspectorError(f"{len(models)} models given; view takes one, or two to compare")
        if not 0 <= args.port <= 65535:
            raise InspectorError(f"--port {args.port} is not a port (0..65535; 0 picks a free one)")
        explorer = Explorer(models, images, device=args.device)
        try:
            server = ExplorerServer(explorer, args.port)
        except OSError as exc:
            raise InspectorError(f"cannot listen on 127.0.0.1:{args.port} ({exc.strerror}); pick another --port") from None
        print(f"inspector view: {server.url}", flush=True)
        print("inspector: the address carries this session's token; Ctrl-C stops the server", file=sys.stderr)
        if not args.no_browser:
            import webbrowser

            webbrowser.open(server.url)
        try:
            server.serve_forever()
        finally:
            server.server_close()
        return 0


COMMAND = View()
