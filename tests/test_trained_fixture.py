"""tests/trained.py: real models missing skip a test offline, and fail it where INSPECTOR_REQUIRE_MODELS=1 (CI)."""

import os
import subprocess
import sys

import pytest

import trained


@pytest.fixture
def nothing_fetched(tmp_path, monkeypatch):
    monkeypatch.setattr(trained, "ROOT", str(tmp_path / "models" / "trained"))


def test_missing_models_skip_offline(nothing_fetched, monkeypatch):
    monkeypatch.delenv("INSPECTOR_REQUIRE_MODELS", raising=False)
    with pytest.raises(pytest.skip.Exception, match="not fetched"):
        trained.model("vgg16_tumor")
    monkeypatch.setenv("INSPECTOR_REQUIRE_MODELS", "0")
    with pytest.raises(pytest.skip.Exception):
        trained.photos({"photos": ["astronaut.png"]})


def test_missing_models_fail_where_required(nothing_fetched, monkeypatch):
    monkeypatch.setenv("INSPECTOR_REQUIRE_MODELS", "1")
    with pytest.raises(pytest.fail.Exception, match="INSPECTOR_REQUIRE_MODELS=1"):
        trained.model("vgg16_tumor")
    with pytest.raises(pytest.fail.Exception):
        trained.photos({"photos": ["astronaut.png"]})


def test_the_model_names_come_from_the_repository_not_models():
    """A fresh clone has no models/ folder: the names must not be read through it (collection broke there)."""
    assert trained.FETCH_SCRIPT == os.path.join(trained.REPO, "demo", "fetch_trained.py")
    assert "vgg16_tumor" in trained.names()


def test_the_fetch_script_fails_when_the_index_is_unreachable(tmp_path):
    """What `make test` relies on under INSPECTOR_REQUIRE_MODELS=1: exit 1, not 0, when models are missing.
    The index is a closed local port, so nothing leaves the machine."""
    env = dict(os.environ, PIP_INDEX_URL="http://127.0.0.1:9/simple", PIP_RETRIES="0", PIP_TIMEOUT="2",
               PIP_NO_CACHE_DIR="1", PIP_FIND_LINKS="")
    result = subprocess.run([sys.executable, trained.FETCH_SCRIPT, str(tmp_path / "trained")], capture_output=True,
                            text=True, env=env)
    assert result.returncode == 1, result.stderr
    assert "unavailable" in result.stderr
