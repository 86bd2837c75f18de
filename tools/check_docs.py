"""Check what README.md and docs/*.md say that a machine can check, in seconds, against the real code.

    python tools/check_docs.py          # prints what was checked; exit 1 and one line per problem if any

What it checks:
- Commands in code blocks (``inspector ...`` and ``$ inspector ...`` lines, continuations joined,
  comments and pipes cut off): each parses with the real argument parser of its subcommand (the
  converters' for ``inspector convert``), and every flag it uses is listed by that subcommand's
  ``--help``. Synopsis lines (with ``[...]`` placeholders) and the ``### `inspector CMD ...` ``
  headings only have their flags checked against ``--help``.
- Exit codes: the README's exit-code table equals the codes ``inspector/cli.py`` defines; every
  "exit N" / "exits N" in the docs names one of them; and the real CLI, run in-process on tiny models
  built here, gives 0 (layers), 2 (a missing model), 1 (audit --fail-on-dead, diff --fail-under).
- JSON fields: every key of the docs' ```json examples exists at its place in the schema the doc
  describes (inspector/schemas/*.json); every field named in a ``| field | meaning |`` table, and in
  docs/prune.md's list of JSON fields, exists in that schema.
- Metadata keys: the README's ``| key | value |`` table lists exactly inspector/metadata.py's keys.
- Counts a tiny model reproduces: the README's ``inspector layers models/vgg16.onnx`` rows, from a
  two-layer stand-in with VGG16's first two conv layers (names, shapes, biases); the "params without
  biases" figures quoted after it; the number of keras.applications models ``make zoo`` converts
  (bench/zoo.py's list).

What it cannot check (and does not pretend to): timings, memory and speed-up figures (they depend on
the machine: bench/results.md records them with the environment), figures from the trained models of
``make models-trained`` or from VGG16's real weights (tests/ hold those against independent
references), pictures, and prose.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import re
import shlex
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md", *sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))]
SCHEMA_OF = {"docs/audit.md": "audit", "docs/diff.md": "diff", "docs/prune.md": "prune"}
SHELL_ENDS = {"|", "||", "&&", ";", ">", ">>", "2>", "2>&1", "<", "&"}


def read(path: str) -> str:
    with open(os.path.join(ROOT, path), encoding="utf-8") as handle:
        return handle.read()


def code_blocks(text: str):
    """(language, first line number, lines) of every fenced block."""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"^\s*```(\w*)\s*$", lines[i])
        if opening:
            start, block = i + 1, []
            i += 1
            while i < len(lines) and not re.match(r"^\s*```\s*$", lines[i]):
                block.append(lines[i])
                i += 1
            yield opening.group(1), start + 1, block
        i += 1


def command_lines(block: list[str], first: int):
    """(line number, text) of each ``inspector ...`` command in a block, continuations joined."""
    i = 0
    while i < len(block):
        line, number = block[i], first + i
        while line.rstrip().endswith("\\") and i + 1 < len(block):
            i += 1
            line = line.rstrip()[:-1] + " " + block[i].strip()
        text = line.strip()
        if text.startswith("$ "):
            text = text[2:].strip()
        if re.match(r"^inspector\s+[\w-]+(\s|$)", text):  # not output such as 'inspector convert: wrote ...'
            yield number, text
        i += 1


# ----------------------------------------------------------------------------- the real parsers

_PARSERS: dict = {}


def subparser(command: str, convert_kind: str | None = None):
    """The argparse parser of ``inspector COMMAND`` (of ``inspector convert KIND`` for convert)."""
    key = (command, convert_kind)
    if key not in _PARSERS:
        if command == "convert":
            from converters.cli import build_parser

            top = build_parser()
            action = next(a for a in top._actions if a.__class__.__name__ == "_SubParsersAction")
            _PARSERS[key] = (top, action.choices.get(convert_kind) if convert_kind else None)
        else:
            from inspector.cli import build_parser

            top, _ = build_parser(command)
            action = next(a for a in top._actions if a.__class__.__name__ == "_SubParsersAction")
            _PARSERS[key] = (top, action.choices[command])
    return _PARSERS[key]


def flags_in(tokens) -> list[str]:
    found = []
    for token in tokens:
        for flag in re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", token):
            found.append(flag)
    return found


def check_flags(where: str, command: str, flags, problems: list[str], convert_kind=None) -> None:
    _, sub = subparser(command, convert_kind)
    if sub is None:
        problems.append(f"{where}: 'inspector convert' needs a known kind, got {convert_kind!r}")
        return
    shown = sub.format_help()
    for flag in flags:
        if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", shown):
            problems.append(f"{where}: inspector {command} {convert_kind or ''} --help does not list {flag}".replace("  ", " "))


def check_command(where: str, text: str, problems: list[str]) -> bool:
    from inspector.cli import COMMANDS

    try:
        tokens = shlex.split(text, comments=True)
    except ValueError as exc:
        problems.append(f"{where}: cannot split {text!r} ({exc})")
        return False
    for i, token in enumerate(tokens):
        if token in SHELL_ENDS or token.startswith(">") or token.startswith("2>"):
            tokens = tokens[:i]
            break
    argv = tokens[1:]
    if not argv or argv[0] in ("--help", "-h", "--version"):
        return True
    command = argv[0]
    if command not in COMMANDS and command != "convert":
        problems.append(f"{where}: 'inspector {command}' is not a command ({', '.join(COMMANDS)})")
        return False
    kind = argv[1] if command == "convert" and len(argv) > 1 else None
    synopsis = any("[" in t or t.endswith("...") or t.isupper() and len(t) > 1 and "|" in t for t in argv)
    check_flags(where, command, flags_in(argv[2 if kind else 1:]), problems, kind)
    if synopsis:
        return True
    top, _ = subparser(command, kind)
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            top.parse_args(argv[1:] if command == "convert" else argv)
    except SystemExit as exc:
        if exc.code:
            problems.append(f"{where}: {text!r} does not parse: {err.getvalue().strip().splitlines()[-1:]}")
            return False
    except Exception as exc:  # noqa: BLE001 - the converters' parser raises its usage error
        problems.append(f"{where}: {text!r} does not parse: {exc}")
        return False
    return True


def check_commands(problems: list[str]) -> int:
    checked = 0
    for doc in DOCS:
        text = read(doc)
        for language, first, block in code_blocks(text):
            if language not in ("", "sh", "bash", "console", "shell"):
                continue
            for number, command in command_lines(block, first):
                check_command(f"{doc}:{number}", command, problems)
                checked += 1
        for number, line in enumerate(text.splitlines(), 1):
            heading = re.match(r"^#+\s+`(inspector\s[^`]*)`", line)
            if heading:
                words = heading.group(1).split()
                if len(words) > 1:
                    command = words[1]
                    kind = words[2] if command == "convert" and len(words) > 2 and not words[2].startswith(("[", "-")) else None
                    if command == "convert" and kind and "|" in kind:
                        for one in kind.split("|"):
                            check_flags(f"{doc}:{number}", command, flags_in(words[3:]), problems, one)
                    else:
                        check_flags(f"{doc}:{number}", command, flags_in(words[2:]), problems, kind)
                    checked += 1
    return checked


# ----------------------------------------------------------------------------- exit codes

def defined_exit_codes() -> set[int]:
    from inspector import cli

    return {cli.EXIT_OK, cli.EXIT_CHECK_FAILED, cli.EXIT_USAGE, cli.EXIT_INTERRUPTED}


def check_exit_code_statements(problems: list[str]) -> int:
    codes = defined_exit_codes()
    readme = read("README.md")
    section = readme.split("## Exit codes", 1)
    if len(section) < 2:
        problems.append("README.md: no '## Exit codes' section")
    else:
        table = {int(m) for m in re.findall(r"^\|\s*(\d+)\s*\|", section[1].split("\n## ", 1)[0], re.M)}
        if table != codes:
            problems.append(f"README.md: the exit-code table lists {sorted(table)}, inspector/cli.py defines {sorted(codes)}")
    checked = 1
    for doc in DOCS:
        for number, line in enumerate(read(doc).splitlines(), 1):
            for found in re.findall(r"\b(?:exit|exits|exited|exit code)\s+(\d+)\b", line):
                checked += 1
                if int(found) not in codes:
                    problems.append(f"{doc}:{number}: exit {found} is not one of the CLI's codes {sorted(codes)}")
    return checked


def run_cli(*args) -> int:
    from inspector.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return main([str(a) for a in args])


def tiny_model(path: str, names=("block1_conv1", "block1_conv2"), channels=(3, 64, 64), bias=True,
               dead=(), seed=0, size=8) -> None:
    """Conv+Relu layers named as the Keras converter names them (kernel 'NAME.kernel', Relu output NAME)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, previous = [], [], "input_layer"
    for name, c_in, c_out in zip(names, channels, channels[1:]):
        kernel = (rng.standard_normal((c_out, c_in, 3, 3)) * 0.1).astype(np.float32)
        kernel[list(dead)] = 0
        inputs = [previous, f"{name}.kernel"]
        inits.append(numpy_helper.from_array(kernel, f"{name}.kernel"))
        if bias:
            values = (rng.standard_normal(c_out) * 0.1).astype(np.float32)
            values[list(dead)] = 0
            inputs.append(f"{name}.bias")
            inits.append(numpy_helper.from_array(values, f"{name}.bias"))
        nodes += [helper.make_node("Conv", inputs, [f"{name}/conv"], name=name, pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"{name}/conv"], [name], name=f"{name}/Relu")]
        previous = name
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("input_layer", TensorProto.FLOAT,
                                                                           [1, channels[0], size, size])],
                              [helper.make_tensor_value_info(previous, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def check_exit_codes_by_running(folder: str, problems: list[str]) -> int:
    import numpy as np
    from PIL import Image

    healthy, other, dead = (os.path.join(folder, n) for n in ("healthy.onnx", "other.onnx", "dead.onnx"))
    tiny_model(healthy, channels=(3, 4, 4))
    tiny_model(other, channels=(3, 4, 4), seed=1)
    tiny_model(dead, channels=(3, 4, 4), dead=(1,))
    photo = os.path.join(folder, "photo.png")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(photo)
    cases = [
        ("layers on a valid model", ("layers", healthy), 0),
        ("a missing model", ("layers", os.path.join(folder, "missing.onnx")), 2),
        ("audit --fail-on-dead 0 with a dead filter", ("audit", dead, "--fail-on-dead", "0"), 1),
        ("audit --fail-on-dead 0 without one", ("audit", healthy, "--fail-on-dead", "0"), 0),
        ("diff --fail-under 100 of two different models",
         ("diff", healthy, other, photo, "--preprocess", "raw", "--fail-under", "100"), 1),
    ]
    for what, args, expected in cases:
        code = run_cli(*args)
        if code != expected:
            problems.append(f"README.md exit codes: {what} exits {code}, the table says {expected}")
    return len(cases)


# ----------------------------------------------------------------------------- JSON fields

def schema(name: str) -> dict:
    with open(os.path.join(ROOT, "inspector", "schemas", f"{name}.schema.json")) as handle:
        return json.load(handle)


def _options(node: dict, root: dict):
    """The schema node and every alternative it stands for ($ref, anyOf, oneOf, allOf)."""
    if not isinstance(node, dict):
        return []
    found = [node]
    if "$ref" in node and node["$ref"].startswith("#/"):
        target = root
        for part in node["$ref"][2:].split("/"):
            target = target[part]
        found += _options(target, root)
    for key in ("anyOf", "oneOf", "allOf"):
        for alternative in node.get(key, []):
            found += _options(alternative, root)
    return found


def has_path(root: dict, parts: list[str]) -> bool:
    nodes = _options(root, root)
    for part in parts:
        following = []
        for node in nodes:
            if part == "[]":
                items = node.get("items")
                if isinstance(items, dict):
                    following += _options(items, root)
            else:
                properties = node.get("properties", {})
                if part in properties:
                    following += _options(properties[part], root)
                elif isinstance(node.get("additionalProperties"), dict):
                    following += _options(node["additionalProperties"], root)
        if not following:
            return False
        nodes = following
    return True


def all_property_names(node) -> set[str]:
    names = set()
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                names |= set(value)
            names |= all_property_names(value)
    elif isinstance(node, list):
        for value in node:
            names |= all_property_names(value)
    return names


def json_paths(value, prefix=()):
    if isinstance(value, dict):
        for key, child in value.items():
            yield [*prefix, key]
            yield from json_paths(child, (*prefix, key))
    elif isinstance(value, list):
        for child in value:
            yield from json_paths(child, (*prefix, "[]"))


def field_names(cell: str) -> list[str]:
    """`a.b`, `c` / `d`, `x_before/after` -> field paths (``[]`` marks a list)."""
    names = []
    for token in re.findall(r"`([^`]+)`", cell):
        token = token.strip()
        if not re.match(r"^[A-Za-z_][\w.\[\]/]*$", token):
            continue
        if token.endswith("_before/after"):
            base = token[: -len("_before/after")]
            names += [base + "_before", base + "_after"]
        else:
            names.append(token.replace("[]", ""))
    return names


def check_json_fields(problems: list[str]) -> int:
    checked = 0
    for doc, name in SCHEMA_OF.items():
        root = schema(name)
        everywhere = all_property_names(root)
        text = read(doc)
        for language, first, block in code_blocks(text):
            if language != "json":
                continue
            source = "\n".join(block)
            source = re.sub(r"\[\s*\.\.\.\s*\]", "[]", source)
            source = re.sub(r",\s*\.\.\.\s*(?=[\]}])", "", source)
            try:
                example = json.loads(source)
            except json.JSONDecodeError as exc:
                problems.append(f"{doc}:{first}: the JSON example does not parse ({exc})")
                continue
            for path in json_paths(example):
                checked += 1
                if not has_path(root, path):
                    problems.append(f"{doc}:{first}: JSON example field {'.'.join(path)} is not in {name}.schema.json")
        lines = text.splitlines()
        for number, line in enumerate(lines, 1):
            if re.match(r"^\|\s*field\s*\|", line):
                for row_number in range(number + 1, len(lines) + 1):
                    row = lines[row_number - 1]
                    if not row.startswith("|"):
                        break
                    first_cell = row.split("|")[1]
                    for field in field_names(first_cell):
                        checked += 1
                        if not (has_path(root, field.split(".")) or field.split(".")[-1] in everywhere):
                            problems.append(f"{doc}:{row_number}: field `{field}` is not in {name}.schema.json")
        listed = re.search(r"writes the same as data:(.*?)\(schema:", text, re.S)
        if name == "prune":
            if not listed:
                problems.append("docs/prune.md: the list of JSON fields ('writes the same as data: ... (schema:') is gone")
            else:
                for field in field_names(listed.group(1)):
                    checked += 1
                    if field not in everywhere:
                        problems.append(f"docs/prune.md: JSON field `{field}` is not in prune.schema.json")
    return checked


def check_metadata_keys(problems: list[str]) -> int:
    from inspector import metadata

    defined = {v for k, v in vars(metadata).items() if k.isupper() and isinstance(v, str)
               and v.startswith(metadata.PREFIX) and v != metadata.PREFIX}
    section = read("README.md").split("### Metadata keys", 1)
    if len(section) < 2:
        problems.append("README.md: no '### Metadata keys' section")
        return 0
    listed = set(re.findall(r"^\|\s*`(inspector\.[\w.]+)`\s*\|", section[1].split("\n## ", 1)[0], re.M))
    if listed != defined:
        problems.append(f"README.md Metadata keys: listed but not defined {sorted(listed - defined)}, "
                        f"defined but not listed {sorted(defined - listed)} (inspector/metadata.py)")
    return len(listed)


# ----------------------------------------------------------------------------- counts

def check_layers_example(folder: str, problems: list[str]) -> int:
    """The README's `inspector layers models/vgg16.onnx` rows from a stand-in with the same first layers."""
    readme = read("README.md")
    shown = None
    for _, first, block in code_blocks(readme):
        if block and block[0].strip() == "$ inspector layers models/vgg16.onnx":
            shown = (first, [line for line in block[1:] if line.strip() and line.strip() != "..."])
    if shown is None:
        problems.append("README.md: the `inspector layers models/vgg16.onnx` example is gone")
        return 0
    first, rows = shown
    path = os.path.join(folder, "vgg16_first_layers.onnx")
    tiny_model(path)
    from inspector.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        main(["layers", path])
    printed = [line.split() for line in out.getvalue().splitlines()]
    for offset, row in enumerate(rows):
        if offset >= len(printed) or row.split() != printed[offset]:
            problems.append(f"README.md:{first + 1 + offset}: the layers example shows {row.split()}, "
                            f"a model with VGG16's first layers prints {printed[offset] if offset < len(printed) else None}")
    # The note after it: the same layers without biases (the offline demo model).
    note = re.search(r"`params` reads (\d[\d,]*\d) and (\d[\d,]*\d)", readme)
    path = os.path.join(folder, "vgg16_first_layers_no_bias.onnx")
    tiny_model(path, bias=False)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        main(["layers", path, "--json"])
    params = [f"{layer['params']:,}" for layer in json.loads(out.getvalue())]
    if note and list(note.groups()) != params[:2]:
        problems.append(f"README.md: without biases the layers read {params[:2]}, the note says {list(note.groups())}")
    return len(rows) + (1 if note else 0)


def check_zoo_count(problems: list[str]) -> int:
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        import zoo
    finally:
        sys.path.pop(0)
    count = len(zoo.KERAS_APPS)
    checked = 0
    for doc in DOCS:
        for number, line in enumerate(read(doc).splitlines(), 1):
            for found in re.findall(r"converts (\d+) of the \d+ models `?keras\.applications", line):
                checked += 1
                if int(found) != count:
                    problems.append(f"{doc}:{number}: says make zoo converts {found} keras.applications models; "
                                    f"bench/zoo.py lists {count}")
            if re.search(r"every `?keras\.applications`? model", line):
                problems.append(f"{doc}:{number}: 'every keras.applications model': make zoo converts {count}")
    return checked


def main(argv=None) -> int:
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
    problems: list[str] = []
    counts = {"commands and synopses": check_commands(problems),
              "exit-code statements": check_exit_code_statements(problems),
              "JSON fields": check_json_fields(problems),
              "metadata keys": check_metadata_keys(problems),
              "keras.applications counts": check_zoo_count(problems)}
    with tempfile.TemporaryDirectory(prefix="check-docs-") as folder:
        counts["exit codes run"] = check_exit_codes_by_running(folder, problems)
        counts["layers example rows"] = check_layers_example(folder, problems)
    print("checked: " + ", ".join(f"{n} {what}" for what, n in counts.items()))
    print("not checked: timings, memory and speed-ups, figures from the trained or real VGG16 models, "
          "pictures, prose (see this script's docstring)")
    for problem in problems:
        print(f"docs: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
