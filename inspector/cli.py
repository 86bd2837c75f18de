"""Command line: parse, call the library, print, map errors to exit codes.

Exit codes: 0 success; 1 a check failed (audit gate, parity check); 2 usage
or input error; 130 interrupted. Nothing heavy is imported until a command
runs, so ``inspector --help`` is instant. A closed stdout (``| head``, ``| true``)
changes neither: the command carries on, writes its files and keeps its exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from .errors import CheckFailed, InspectorError

# name -> module in inspector.commands; each module defines COMMAND (a Command).
COMMANDS = ("layers", "filters", "maps", "cam", "audit", "diff", "prune", "report", "view", "convert")
EXIT_OK, EXIT_CHECK_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class Command:
    """One subcommand: declares its arguments, runs with parsed args, returns an exit code."""

    name = ""
    help = ""
    description = ""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def run(self, args: argparse.Namespace) -> int:  # pragma: no cover - abstract
        raise NotImplementedError


# ------------------------------------------------------------ shared option groups

def size_arg(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        if len(parts) == 1:
            height = width = int(parts[0])
        elif len(parts) == 2:
            height, width = int(parts[0]), int(parts[1])
        else:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a size; use HxW, e.g. 224x224") from None
    if not (1 <= height <= 16384 and 1 <= width <= 16384):
        raise argparse.ArgumentTypeError(f"size {text} out of range (1..16384 per side)")
    return height, width


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def add_model(parser) -> None:
    parser.add_argument("model", metavar="MODEL", help="ONNX model file (.onnx)")


def add_selection(parser, default_max: int = 64, what: str = "tiles",
                  default_layers: str = "the first conv layer") -> None:
    group = parser.add_argument_group("layer selection")
    group.add_argument("--layer", "-l", action="append", metavar="SEL", dest="layers",
                       help="layer by index, name, node name, output tensor or unique substring "
                            f"(repeat for several; default: {default_layers})")
    group.add_argument("--all", action="store_true", dest="all_layers", help="every conv layer")
    group.add_argument("--max", type=positive_int, default=default_max, metavar="N",
                       help=f"at most N {what} per layer (default {default_max})")


def add_preprocessing(parser) -> None:
    group = parser.add_argument_group("input")
    group.add_argument("--preprocess", metavar="SPEC",
                       help="pixel preprocessing (default: from the model's metadata or its exporter's, else "
                            "guessed as torch and said so). Presets: caffe (RGB->BGR minus ImageNet mean), "
                            "torch (/255 then ImageNet mean/std), tf ([-1, 1]), raw (/255), bgr255 (BGR 0..255); "
                            "or your own: 'order=BGR;scale=1/255;mean=0.5;std=0.5', a preset with overrides "
                            "('torch;order=BGR'), or a JSON object")
    group.add_argument("--size", type=size_arg, metavar="HxW",
                       help="input size when the model leaves it open (default 224x224 or the metadata's)")
    group.add_argument("--layout", choices=("nchw", "nhwc"),
                       help="input layout when it cannot be told from the model (default: detected)")


def add_device(parser) -> None:
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                        help="execution provider: cuda never falls back to CPU silently (default auto)")


def memory_size(text: str) -> int:
    from .resources import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_max_memory(parser, what: str) -> None:
    """--max-memory: refuse before running when ``what`` would not fit (estimated from the graph's shapes)."""
    from .resources import DEFAULT_MAX_MEMORY

    parser.add_argument("--max-memory", type=memory_size, default=DEFAULT_MAX_MEMORY, metavar="SIZE",
                        help=f"refuse to start when {what} would need more memory than this, estimated from "
                             "the graph's shapes (default 4G; e.g. 8G, 512M)")


def add_output_dir(parser) -> None:
    parser.add_argument("-o", "--output", default="inspector-out", metavar="DIR",
                        help="folder for the pictures (default ./inspector-out)")


# --------------------------------------------------------------------- main

def emit_json(target: str, data: dict, description: str | None = None) -> None:
    """``--json FILE|-``: the JSON alone on stdout for ``-``, else written whole (temp file and rename)
    and, with a ``description``, named on stderr."""
    import json

    from .atomic import write_text

    text = json.dumps(data, indent=1) + "\n"
    if target == "-":
        sys.stdout.write(text)
        return
    write_text(target, text)
    if description:
        print(f"{target}  ({description})", file=sys.stderr)


def build_parser(only: str | None = None) -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    """The parser and its commands; ``only``: build just that command's subparser.

    ``main`` passes ``only`` when the first argument names a command: then no other
    command's module is imported and no other subparser built (about 20 ms a run).
    Top-level ``--help`` and argparse's "invalid choice" message still see them all.
    """
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="inspector",
        description="See inside any CNN, whatever framework trained it: filters, feature maps and "
                    "audits from an ONNX file.",
        epilog="Exit codes: 0 ok, 1 check failed, 2 usage or input error, 130 interrupted. "
               "'inspector COMMAND --help' for each command.",
    )
    parser.add_argument("--version", action="version", version=f"inspector {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="show onnxruntime's log and tracebacks of unexpected errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands: dict[str, Command] = {}
    for name in COMMANDS if only is None else (only,):
        command = importlib.import_module(f".commands.{name}", __package__).COMMAND
        sub = subparsers.add_parser(name, help=command.help, description=command.description or command.help)
        sub.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                         help="show onnxruntime's log and tracebacks of unexpected errors")
        command.add_arguments(sub)
        commands[name] = command
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    """The command line; ``argv`` None means this is the process (the ``inspector`` script)."""
    if argv is not None:  # a call from Python: return the exit code, leave the interpreter alone
        with _StdoutMayClose(process=False):
            return _main(list(argv))
    _terminate_as_interrupt()  # a real process: `kill` cleans up like Ctrl-C
    argv = list(sys.argv[1:])
    with _StdoutMayClose(process=True):
        code = _main(argv)
    if argv[:1] != ["convert"]:  # TensorFlow and torch keep their own exit hooks
        _exit_now(code)
    return code


class _ClosedPipeSafe:
    """sys.stdout while a command runs: when its reader goes away (``| head``, ``| true``), the rest of
    what would be printed is dropped and the command carries on. A gate that ended at the first failed
    print passed (exit 0) without writing its JSON; it must keep its verdict and its files whatever
    happens to stdout."""

    def __init__(self, stream, process: bool):
        self._stream = stream
        self._process = process
        self.reader_gone = False

    def write(self, text):
        if not self.reader_gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._gone()
        return len(text)

    def flush(self):
        if not self.reader_gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._gone()

    def _gone(self):
        self.reader_gone = True
        if self._process:  # what is still buffered, and what libraries write to fd 1, goes nowhere quietly
            try:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, self._stream.fileno())
                os.close(devnull)
            except (OSError, ValueError):
                pass

    def __getattr__(self, name):  # isatty, fileno, encoding, buffer... of the real stream
        return getattr(self._stream, name)


class _StdoutMayClose:
    """Puts ``_ClosedPipeSafe`` around sys.stdout for the length of one command."""

    def __init__(self, process: bool):
        self.process = process

    def __enter__(self):
        self.saved = sys.stdout
        if sys.stdout is not None:
            sys.stdout = _ClosedPipeSafe(sys.stdout, self.process)

    def __exit__(self, *exc):
        sys.stdout = self.saved
        return False


def _exit_now(code: int) -> None:
    """End the process without the interpreter's teardown: every file is written and closed by
    now, and unloading onnx, onnxruntime, NumPy and Pillow module by module took 70 ms of a
    0.8 s ``maps --all`` (the bare onnxruntime script's exit: 40 ms)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (`| head`) or stream: nothing more to say there
            pass
    os._exit(code)


def _main(argv: list[str]) -> int:
    if argv and argv[0] == "convert":
        # The converters own their arguments; import them (and TensorFlow/torch) only now.
        return _guarded(lambda: _convert(argv[1:]), verbose="-v" in argv or "--verbose" in argv)
    parser, commands = build_parser(argv[0] if argv and argv[0] in COMMANDS else None)
    if argv and argv[0] in COMMANDS:
        argv = [argv[0]] + _join_negative_values(parser, argv[0], argv[1:])
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version exit 0, errors exit 2
        return int(exc.code or 0)
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    return _guarded(lambda: commands[args.command].run(args), verbose=getattr(args, "verbose", False))


_NEGATIVE_VALUE = re.compile(r"^-\d[-\d:,.]*$|^-\d*:")


def _join_negative_values(parser, command: str, argv: list[str]) -> list[str]:
    """``--layer -2:`` as ``--layer=-2:``: argparse takes a value starting with '-' for an option unless it
    reads as a plain negative number, so a negative slice (``-2:``, ``-3:-1``) after an option that takes
    one value would be refused as a missing argument."""
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    options = sub.choices[command]._option_string_actions if sub is not None and command in sub.choices else {}
    out: list[str] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if token == "--":
            out.extend(argv[i:])
            break
        action = options.get(token)
        if (action is not None and action.nargs is None and action.option_strings and i + 1 < len(argv)
                and _NEGATIVE_VALUE.match(argv[i + 1]) and argv[i + 1] not in options):
            out.append(f"{token}={argv[i + 1]}" if token.startswith("--") else token + argv[i + 1])
            i += 2
            continue
        out.append(token)
        i += 1
    return out


def _convert(argv: list[str]) -> int:
    try:
        from converters.cli import main as convert_main
    except ImportError as exc:
        raise InspectorError(f"the converters are not installed ({exc}); install inspector from its source tree") from None
    return convert_main(argv)


def _guarded(run, verbose: bool = False) -> int:
    import warnings

    try:
        with warnings.catch_warnings():
            # numpy's floating-point warnings (NaN, infinite or huge weights in a broken model) are
            # noise on a terminal; the pictures, tables and JSON show the values.
            warnings.filterwarnings("ignore", r"(invalid value|overflow|divide by zero|underflow) encountered",
                                    RuntimeWarning)
            return run()
    except InspectorError as exc:
        _say(f"error: {exc}")
        return EXIT_USAGE
    except CheckFailed as exc:
        _say(f"check failed: {exc}")
        return EXIT_CHECK_FAILED
    except KeyboardInterrupt:
        _say("interrupted")
        return EXIT_INTERRUPTED
    except MemoryError:
        _say("error: out of memory; select fewer layers (--layer) or lower --max")
        return EXIT_USAGE
    except Exception as exc:  # noqa: BLE001 - the last line of defence: never a bare traceback
        if verbose:
            import traceback

            traceback.print_exc()
        _say(f"error: unexpected {exc.__class__.__name__}: {exc} (rerun with --verbose for details; "
             "please report it if the input looks valid)")
        return EXIT_USAGE


def _terminate_as_interrupt() -> None:
    """SIGTERM raises KeyboardInterrupt, so temp files are removed and no output is left half-written."""
    import signal
    import threading

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, interrupt)


def _say(message: str) -> None:
    print(f"inspector: {message}", file=sys.stderr)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
