"""Check the audit's verdicts by ablation on the trained models (docs/audit.md, "Verified by ablation").

For each model of models/trained: a zero-config audit of every photo (the audit holds a quarter out
and verifies its verdicts on them), then, independently of inspector's own ablation (a graph edit
here with constants, the channel means computed here from the judged images):

- per rule (exact zero after Relu, constant, dormant, dead by weights): the units it selects,
  mean-ablated, and the output change on the judged photos and on unseen images;
- everything the audit counts as dead after verification: the same, plus on the held-out photos
  (to compare with the audit's own figure).

Unseen images: the photos flipped left-right and cropped to their central 70% (the set has 11
photos; these are images neither the judging nor the verification ran on). The output change is the
largest |ablated - original| over the images, over the output's range (max - min) there.

    PYTHONPATH=. .venv/bin/python demo/audit_ablation.py [NAME ...] [--json OUT.json]
    PYTHONPATH=. .venv/bin/python demo/audit_ablation.py WILD.onnx ... --photos models/wild/photos

Long surveys (the wild corpus): ``--jsonl FILE`` appends each model's row as it finishes and skips the
models already there, ``--timeout S`` runs each model in its own process with that time limit (a row
with ``error: timeout`` then), so a partial run counts and a rerun resumes::

    PYTHONPATH=. .venv/bin/python demo/audit_ablation.py --wild --photos models/wild/photos \
        --jsonl /tmp/wild_ablation.jsonl --timeout 1500
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

MODELS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "models")
ROOT = os.path.join(MODELS, "trained")
WILD = os.path.join(MODELS, "wild")
MEANS_GROUP = 48  # tensors added as outputs per session when the channel means are computed
# The noise floor (inspector.audit.verify's NOISE_STEP, written again here): measured beside an ablation of
# the FLOORED selections that moves any image set's outputs past FLOOR_ABOVE.
NOISE_STEP = 2.0 ** -20
FLOOR_ABOVE = 1e-4
# The selections whose floor is measured (docs/audit.md's main table; each floor is two more sessions over
# every image set, 20 minutes on the nucleus detector).
FLOORED = ("all judged verdicts (before verification)", "counted dead (after verification)")


def unseen_images(photos: list[str], folder: str) -> list[str]:
    """Each photo flipped left-right and cropped to its central 70%, written as PNGs into ``folder``."""
    from PIL import Image, ImageOps

    out = []
    for path in photos:
        with Image.open(path) as image:
            rgb = image.convert("RGB")
        w, h = rgb.size
        stem = os.path.splitext(os.path.basename(path))[0]
        for kind, changed in (("flip", ImageOps.mirror(rgb)),
                              ("crop", rgb.crop((int(w * 0.15), int(h * 0.15), w - int(w * 0.15), h - int(h * 0.15))))):
            target = os.path.join(folder, f"{stem}_{kind}.png")
            changed.save(target)
            out.append(target)
    return out


def edited(model_proto, fills: dict[str, tuple[int, np.ndarray, np.ndarray]], scale: float | None = None):
    """A copy where each tensor T in ``fills`` ({T: (channel axis, rank, mask, means)}) becomes
    where(mask, mean, T), with constants: T * (1 - mask) + mask * mean; with ``scale``, where(mask, T * scale,
    T) instead (the noise floor's perturbation: T * (1 + mask * (scale - 1)) + 0)."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model_proto)
    g = m.graph
    for k, (tensor, (axis, rank, mask, means)) in enumerate(fills.items()):
        shape = [1] * rank
        shape[axis] = len(mask)
        raw = f"abl{k}_raw"
        for node in g.node:
            node.output[:] = [raw if o == tensor else o for o in node.output]
        if scale is None:
            keep, fill = (~mask).astype(np.float32), np.where(mask, means, 0).astype(np.float32)
        else:
            keep, fill = np.where(mask, np.float32(scale), np.float32(1)), np.zeros(len(mask), np.float32)
        keep = numpy_helper.from_array(keep.reshape(shape), f"abl{k}_keep")
        fill = numpy_helper.from_array(fill.reshape(shape), f"abl{k}_fill")
        g.initializer.extend([keep, fill])
        g.node.extend([helper.make_node("Mul", [raw, keep.name], [f"abl{k}_mul"]),
                       helper.make_node("Add", [f"abl{k}_mul", fill.name], [tensor])])
    # topological order for onnxruntime is not required; sort anyway with onnx's own helper when present
    return m


def session(model, proto):
    import onnxruntime as ort

    from inspector.execution import session_options

    options = session_options(model.file.folder)  # the light model's weights are read from its folder
    return ort.InferenceSession(model.file.serialized(proto), options, providers=["CPUExecutionProvider"])


def outputs(sess, model, batches):
    """One {output: array} per batch (a fixed batch filled with copies, other inputs by their rule)."""
    names = [o.name for o in sess.get_outputs()]
    needed = [i.name for i in sess.get_inputs()]
    return [dict(zip(names, sess.run(None, model.feeds(x, needed)))) for x in batches]


def change(reference, ablated, share: float = 0.01) -> tuple[float, float]:
    """(worst, moved): the largest |ablated - reference| over the output's range (max - min), the worst
    output's; and the fraction of output values (over every output and image) that moved by more than
    ``share`` of their output's range: where the worst value says how far, this says how many."""
    worst, count, total = 0.0, 0, 0
    for key in reference[0]:
        ref = np.concatenate([r[key].astype(np.float64).ravel() for r in reference])
        new = np.concatenate([a[key].astype(np.float64).ravel() for a in ablated])
        span = ref.max() - ref.min() if ref.size else 0.0
        gap = np.abs(ref - new)
        diff = float(np.max(gap)) if ref.size else 0.0
        worst = max(worst, diff / span if span > 0 else (0.0 if diff == 0 else 1.0))
        count += int(np.count_nonzero(gap > share * span)) if span > 0 else int(diff != 0)
        total += ref.size
    return worst, (count / total if total else 0.0)


def measure(name: str, path: str | None = None, photos_dir: str | None = None, extra=None) -> dict:
    """``extra``: optional ``extra(result) -> {rule: {layer name: [channels]}}``, more selections to measure."""
    import inspector
    from inspector.audit import audit, collect_images
    from inspector.audit.verify import split
    from inspector.audit.verdicts import MIN_IMAGES
    from inspector.execution import add_outputs

    model = inspector.load(path or os.path.join(ROOT, f"{name}.onnx"))
    photos = collect_images([photos_dir or os.path.join(ROOT, "photos")])
    start = time.perf_counter()
    result = audit(model, photos, quiet=True, device="cpu")
    seconds = time.perf_counter() - start
    data = result.to_dict()
    judged_files, held_files = split(photos, MIN_IMAGES)
    # The audit's own feeding (preprocessing inferred from the images where the file does not say).
    feeding = model.feeding(None, None, photos)
    spec, size = feeding.preprocess, tuple(result.input_size)
    fixed = model.input.batch
    one = lambda images: [model.image_batch([i], spec, size) for i in images]  # noqa: E731
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        judged, held, unseen = one(judged_files), one(held_files), one(unseen_images(photos, folder))
    layers = {layer.name: layer for layer in model.require_layers()}
    by_name = {entry["name"]: entry for entry in data["layers"]}
    # Per-channel means over the judged images, from the unmodified model's tensors (NumPy here).
    tensors = list(dict.fromkeys(layers[n].output for n in by_name))
    means = {}
    # One image and a group of tensors at a time: every map of 12 images at once took 4.5 GB on a
    # multilingual text detector, past what a shared machine had free.
    for start in range(0, len(tensors), MEANS_GROUP):
        group = set(tensors[start:start + MEANS_GROUP])
        plain = session(model, add_outputs(model.file.model, sorted(group)))
        for x in judged:  # one image's maps at a time
            got = outputs(plain, model, [x])[0]
            for n in by_name:
                layer = layers[n]
                if layer.output not in group:
                    continue
                axis = layer.output_perm.index(1) if layer.output_perm else 1
                values = np.moveaxis(got[layer.output].astype(np.float64), axis, 1)
                values = values[:1]  # a fixed batch is filled with copies of the image
                means.setdefault(n, []).append(values.reshape(values.shape[0], values.shape[1], -1).mean(axis=(0, 2)))
            del got
        del plain
    means = {n: np.mean(v, axis=0) for n, v in means.items()}
    sets = (("judged", judged), ("held", held), ("unseen", unseen))
    references: dict = {}  # per set of edited tensors: the same edit with nothing ablated

    def reference(fills) -> dict:
        """The outputs of the model with the same tensors edited and nothing ablated (keep 1, fill 0).

        Not the unmodified model's: the inserted Mul and Add change which of onnxruntime's fusions apply,
        and on the nucleus detector (a softmax per pixel) that alone moved outputs by 17.5% of their range,
        which the ablation's figure must not count. The audit's own verification compares the same way."""
        tensors = tuple(sorted(fills))
        if tensors not in references:
            noop = {t: (axis, rank, np.zeros_like(mask), means) for t, (axis, rank, mask, means) in fills.items()}
            sess = session(model, edited(model.file.model, noop))
            references[tensors] = {which: outputs(sess, model, xs) for which, xs in sets}
        return references[tensors]

    done: dict = {}  # the same selection (several rules often pick the same units) is measured once

    def ablate(select, floor: bool = False) -> dict:
        """The selection's output change on each image set; with ``floor``, its noise floor beside it."""
        fills = {}
        count = 0
        for n, entry in by_name.items():
            chosen = sorted(set(select(entry)))
            if not chosen:
                continue
            layer = layers[n]
            mask = np.zeros(entry["filters"], bool)
            mask[chosen] = True
            count += len(chosen)
            axis = layer.output_perm.index(1) if layer.output_perm else 1
            if layer.output in fills:
                mask |= fills[layer.output][2]
            fills[layer.output] = (axis, len(layer.weight_shape), mask, means[n])
        if not count:
            return {"units": 0, "judged": 0.0, "held": 0.0, "unseen": 0.0}
        key = tuple(sorted((t, tuple(np.flatnonzero(f[2]))) for t, f in fills.items()))
        base = reference(fills)
        if key not in done:
            sess = session(model, edited(model.file.model, fills))
            done[key] = {}
            for which, xs in sets:
                done[key][which], done[key][f"moved_{which}"] = change(base[which], outputs(sess, model, xs))
            del sess
        if floor and "floor_unseen" not in done[key] and max(done[key][w] for w, _ in sets) > FLOOR_ABOVE:
            # The noise floor: the same units only scaled by 1 +- 2**-20 (a rounding-level change), against the
            # same reference; the larger of the two, per image set (and the larger share of values moved).
            floors = {f"{kind}_{which}": 0.0 for which, _ in sets for kind in ("floor", "floor_moved")}
            for sign in (1, -1):
                sess = session(model, edited(model.file.model, fills, 1 + sign * NOISE_STEP))
                for which, xs in sets:
                    worst, share = change(base[which], outputs(sess, model, xs))
                    floors[f"floor_{which}"] = max(floors[f"floor_{which}"], worst)
                    floors[f"floor_moved_{which}"] = max(floors[f"floor_moved_{which}"], share)
                del sess
            done[key].update(floors)
        return {"units": count, **done[key]}

    def judged_channels(entry, field):
        return entry[field] if entry["channels_judged"] else []

    rules = {
        "zero after Relu": lambda e: judged_channels(e, "dead_channels") if e["rectifier"] else [],
        "constant": lambda e: judged_channels(e, "constant_channels"),
        "dormant by score (tau)": lambda e: judged_channels(e, "dormant_channels") + judged_channels(
            e, "not_dormant_channels"),
        "dormant (score, then checked on the judged images)": lambda e: judged_channels(e, "dormant_channels"),
        "dead by weights": lambda e: e["dead_filters"],
        "all judged verdicts (before verification)": lambda e: e["dead_filters"] + judged_channels(e, "dead_channels"),
        "counted dead (after verification)": lambda e: e["dead_filters"] + [
            c for c in judged_channels(e, "dead_channels") if c not in e["not_confirmed_channels"]],
    }
    for rule, chosen in (extra(result) if extra else {}).items():
        rules[rule] = lambda e, chosen=chosen: list(chosen.get(e["name"], []))
    return {"model": name, "seconds": round(seconds, 1), "fixed_batch": fixed,
            "preprocess": data["images"]["preprocess"], "preprocess_source": data["images"]["preprocess_source"],
            "judged_images": data["images"]["count"], "held_out": data["images"]["held_out"],
            "unseen_images": len(unseen), "filters": data["summary"]["filters"],
            "verification": data["verification"], "summary": {k: data["summary"][k] for k in (
                "dead_units", "verified_dead_units", "not_confirmed_channels", "dormant_check")},
            "rules": {rule: ablate(select, floor=rule in FLOORED) for rule, select in rules.items()}}


def wild_image_models() -> list[str]:
    """The wild corpus's ONNX files with an image input (models/wild/manifest.json), smallest first."""
    with open(os.path.join(WILD, "manifest.json")) as handle:
        files = json.load(handle)["files"]
    found = []
    for rel, entry in files.items():
        path = os.path.join(WILD, rel)
        if not rel.endswith(".onnx") or not os.path.exists(path):
            continue
        if entry.get("image"):
            found.append(path)
    return sorted(found, key=os.path.getsize)


def one(name: str, photos: str | None) -> dict:
    try:
        if name.endswith(".onnx"):
            shown = os.path.relpath(name, WILD) if os.path.abspath(name).startswith(WILD + os.sep) else name
            return measure(shown, name, photos)
        return measure(name)
    except Exception as exc:  # noqa: BLE001 - one model that cannot run must not stop the survey
        return {"model": name, "error": f"{type(exc).__name__}: {exc}"}


def in_process(name: str, photos: str | None, timeout: float) -> dict:
    """``one`` in a child process with a time limit (its row comes back as the last line of stdout)."""
    import subprocess

    command = [sys.executable, os.path.abspath(__file__), name] + (["--photos", photos] if photos else [])
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"model": name, "error": f"timeout after {timeout:g} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"model": name, "error": f"exit {done.returncode}: {tail}"}
    return json.loads(lines[-1])


def _pct(value: float | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    text = f"{value * 100:.3g}%" if value >= 1e-4 else f"{value * 100:.1g}%"
    return f"**{text}**" if value > 0.01 else text


def raised(bound: float, floor: float | None) -> float:
    """``bound``, or the noise floor measured beside the figure where it is larger: a change no larger than what
    a rounding-level change of the same units does on the same images cannot be told from rounding. (The
    audit's search caps what its floor may raise, at 10x the tolerance, because it decides what to count; this
    script only asks whether what was counted moved the outputs beyond rounding.)"""
    return max(bound, floor) if floor is not None else bound


def agree(own: float | None, independent: float, floor: float | None = None) -> bool | None:
    """Whether the audit's own figure and the independent one agree within 2x (None: both under 1e-4, or
    under the noise floor measured beside the independent one: then both measure rounding, not the units)."""
    if own is None or max(own, independent) <= raised(1e-4, floor):
        return None
    low, high = sorted((own, independent))
    return low > 0 and high / low <= 2


def table(rows: list[dict]) -> str:
    """docs/audit.md's wild table: per model, counted dead before and after the verification, the output
    change on judged / held-out / unseen images, and the audit's own figure against the independent one."""
    head = ("| model | preprocessing | counted dead before (rules alone) | change judged / held-out / unseen | "
            "counted after verification | not confirmed (answered held-out, by margin) | change judged / held-out / unseen | "
            "own figure, held-out (all / counted) | independent, held-out (all / counted) |\n"
            "|---|---|---|---|---|---|---|---|---|")
    lines, within, agreeing, compared, measured, failed = [head], 0, 0, 0, 0, []
    for row in sorted(rows, key=lambda r: r["model"]):
        if "error" in row:
            shown = row["model"]
            if os.path.abspath(shown).startswith(WILD + os.sep):
                shown = os.path.relpath(shown, WILD)
            failed.append(f"`{shown}`: {row['error']}")
            continue
        measured += 1
        before = row["rules"]["all judged verdicts (before verification)"]
        after = row["rules"]["counted dead (after verification)"]
        check = row["verification"] or {}
        own_all, own_kept = check.get("output_change_all"), check.get("output_change_counted")
        within += after["unseen"] <= raised(0.01, after.get("floor_unseen"))
        for own, independent, floor in ((own_all, before["held"], before.get("floor_held")),
                                        (own_kept, after["held"], after.get("floor_held"))):
            verdict = agree(own, independent, floor)
            if verdict is not None:
                compared += 1
                agreeing += verdict
        refused = check.get("units_not_confirmed", 0)
        answered = check.get("units_answered_held_out", 0)
        by_margin = sum((check.get("units_not_confirmed_by_margin") or {}).values())
        lines.append(
            f"| `{row['model']}` | {row['preprocess_source']} | {before['units']:,} | "
            f"{_pct(before['judged'])} / {_pct(before['held'])} / {_pct(before['unseen'])} | {after['units']:,} | "
            f"{refused:,} ({answered:,}, {by_margin:,}) | {_pct(after['judged'])} / {_pct(after['held'])} / "
            f"{_pct(after['unseen'])}{_floors(after)} | "
            f"{_pct(own_all)} / {_pct(own_kept)} | {_pct(before['held'])} / {_pct(after['held'])} |")
    lines.append("")
    lines.append(f"{measured} models measured; counted dead moves unseen outputs by at most 1% (or the noise "
                 f"floor measured beside it, where larger) on {within} of {measured}; own and independent figures "
                 f"within 2x on {agreeing} of the {compared} comparisons above 1e-4 and above the noise floor.")
    if failed:
        lines.append("Not measured: " + "; ".join(failed) + ".")
    return "\n".join(lines)


def _floors(got: dict) -> str:
    """" (noise floor a / b / c)" where the row measured one beside a change past 1%, else nothing."""
    if "floor_unseen" not in got or max(got["judged"], got["held"], got["unseen"]) <= 0.01:
        return ""
    return f" (noise floor {_pct(got['floor_judged'])} / {_pct(got['floor_held'])} / {_pct(got['floor_unseen'])})"


RULE_COLUMNS = ("zero after Relu", "constant", "dormant by score (tau)",
                "dormant (score, then checked on the judged images)", "dead by weights")


def rules_table(rows: list[dict]) -> str:
    """docs/audit.md's per-rule table: what each rule selects, and its removal's change on judged / held-out /
    unseen images."""
    lines = ["| model | exact zero after Relu | constant | dormant by score (tau = 0.01) | dormant, then checked "
             "on the judged photos | dead by weights |", "|---|---|---|---|---|---|"]
    for row in rows:
        if "error" in row:
            continue
        cells = []
        for rule in RULE_COLUMNS:
            got = row["rules"][rule]
            cells.append("-" if not got["units"] else
                         f"{got['units']:,}: {_pct(got['judged'])} / {_pct(got['held'])} / {_pct(got['unseen'])}"
                         + _floors(got))
        lines.append(f"| `{row['model']}` ({row['preprocess_source']}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="models of models/trained (default: all), or .onnx paths")
    parser.add_argument("--wild", action="store_true", help="every image model of models/wild (smallest first)")
    parser.add_argument("--photos", help="the photo folder for .onnx paths (default: models/trained/photos)")
    parser.add_argument("--json", help="write every row to this file at the end")
    parser.add_argument("--jsonl", help="append each row as it finishes; models already there are skipped")
    parser.add_argument("--timeout", type=float, help="run each model in its own process, with this limit (s)")
    parser.add_argument("--table", action="store_true", help="print the --jsonl file's rows as docs/audit.md's table")
    args = parser.parse_args(argv)
    if args.table:
        if not args.jsonl:
            parser.error("--table reads the rows of --jsonl FILE")
        with open(args.jsonl) as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
        print(rules_table(rows) + "\n\n" + table(rows))
        return 0
    names = list(args.names) + (wild_image_models() if args.wild else [])
    if not names:
        with open(os.path.join(ROOT, "manifest.json")) as handle:
            names = [n for n, e in json.load(handle).items() if e.get("available")]
    finished = set()
    if args.jsonl and os.path.exists(args.jsonl):
        with open(args.jsonl) as handle:
            finished = {json.loads(line).get("path") for line in handle if line.strip()}
    rows = []
    for name in names:
        if name in finished:
            continue
        row = in_process(name, args.photos, args.timeout) if args.timeout else one(name, args.photos)
        row["path"] = name
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.jsonl:
            with open(args.jsonl, "a") as handle:
                handle.write(json.dumps(row) + "\n")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
