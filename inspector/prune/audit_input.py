"""Channels the audit found dead, read from its JSON (``inspector audit --json``) or result.

Only the documented fields are read (per layer ``name``, ``dead_filters``, ``dead_channels``,
``channels_judged``, ``not_confirmed_channels``; the top-level ``verification``); anything else in the
file is ignored, so newer audits with more fields still work, and older ones without the verification
give their judged channels as before.
"""

from __future__ import annotations

import json

from ..errors import InspectorError


def read_audit(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except OSError as exc:
        raise InspectorError(f"--from-audit: cannot read {path} ({exc.strerror or exc})") from None
    except (ValueError, RecursionError) as exc:  # RecursionError: arrays nested thousands deep
        raise InspectorError(f"--from-audit: {path} is not JSON ({exc}); write it with 'inspector audit --json'") from None
    return data


def dead_by_layer(audit: dict, source: str = "the audit", warn=None) -> dict[str, dict[str, list[int]]]:
    """{layer name: {"filters": [...], "channels": [...]}} from an audit's dict.

    A layer whose channels the audit did not judge (``channels_judged: false``: fewer images than
    its rules need) gives no channels: silence on a few images is not death. ``warn`` (a callable)
    is told how many such layers were passed over."""
    layers = audit.get("layers") if isinstance(audit, dict) else None
    if not isinstance(layers, list):
        raise InspectorError(f"{source} has no 'layers' list; write it with 'inspector audit --json'")
    out: dict[str, dict[str, list[int]]] = {}
    unjudged: list[str] = []
    refused = 0
    for entry in layers:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InspectorError(f"{source}: a layer entry has no name")
        found = {}
        for key, field in (("filters", "dead_filters"), ("channels", "dead_channels")):
            value = entry.get(field) or []
            if not isinstance(value, list) or not all(type(i) is int and i >= 0 for i in value):
                raise InspectorError(f"{source}: '{field}' of layer '{entry['name']}' is not a list of indices")
            found[key] = sorted(set(value))
        if entry.get("channels_judged") is False and found["channels"]:
            unjudged.append(entry["name"])
            found["channels"] = []
        # Silent on the judged images, but their removal moved the outputs on the held-out ones: kept.
        not_confirmed = entry.get("not_confirmed_channels") or []
        if isinstance(not_confirmed, list) and found["channels"]:
            kept = set(i for i in not_confirmed if type(i) is int) & set(found["channels"])
            refused += len(kept)
            found["channels"] = [i for i in found["channels"] if i not in kept]
            found["not_confirmed"] = sorted(kept - set(found["filters"]))  # listed by prune as kept, with why
        out[entry["name"]] = found
    if unjudged and warn is not None:
        warn(f"{len(unjudged)} layer(s) with channels silent on too few images to be judged "
             f"(e.g. {unjudged[0]}): their channels are kept; audit with more images to prune them")
    if refused and warn is not None:
        warn(f"{refused} channel(s) the audit found silent but did not confirm (removing them moved the outputs "
             "on its held-out images) are not removed as silent; only the exact rules remove those that are constant")
    return out


def verification_line(audit: dict) -> str | None:
    """What the audit's own check says of the channels it called dead, in one line (None: no check)."""
    check = audit.get("verification") if isinstance(audit, dict) else None
    if not isinstance(check, dict) or not isinstance(check.get("status"), str):
        return None
    if check["status"] == "not run":
        return (f"the audit's channel verdicts are not verified ({check.get('reason') or 'no held-out images'}); "
                "--check measures what removing them does")
    change, images = check.get("output_change_counted"), check.get("images")
    if not isinstance(change, (int, float)) or not isinstance(images, int):
        return None
    from ..audit.verify import floor_words

    tolerance, floor = check.get("tolerance"), check.get("noise_floor")
    words = (floor_words(tolerance, floor if isinstance(floor, (int, float)) else None)
             if isinstance(tolerance, (int, float)) else "tolerance unknown")
    return (f"verified by the audit: removing the {check.get('units_confirmed')} units it counts dead moved the "
            f"outputs by {change:.3g} of their range on {images} held-out image(s) ({words})")
