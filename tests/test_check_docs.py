"""tools/check_docs.py: the README's and docs' checkable claims hold, and the checker catches each kind of
untruth (a test per kind, on a copy of the docs with one claim made false)."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import check_docs  # noqa: E402


def test_the_docs_as_they_are_pass(capsys):
    code = check_docs.main()
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "checked:" in captured.out and "not checked:" in captured.out


def _with(monkeypatch, path, old, new):
    """The docs with one claim changed (``old`` must be there, so the case cannot pass vacuously)."""
    real = check_docs.read
    text = real(path)
    assert old in text, f"{old!r} is no longer in {path}: update this test"

    def read(name):
        return text.replace(old, new, 1) if name == path else real(name)

    monkeypatch.setattr(check_docs, "read", read)


def _problems(monkeypatch, capsys) -> str:
    assert check_docs.main() == 1
    return capsys.readouterr().err


@pytest.mark.parametrize("old, new, expected", [
    ("$ inspector layers models/vgg16.onnx\n", "$ inspector layers models/vgg16.onnx --colour\n", "--colour"),
    ("--fail-under 25 --json diff.json", "--fail-under loud --json diff.json", "does not parse"),
    ("| 130 | interrupted", "| 131 | interrupted", "exit-code table"),
    ("1       1,792      block1_conv1", "1       1,793      block1_conv1", "layers example"),
    ("`make zoo` converts 17 of the 40 models `keras.applications` exports",
     "`make zoo` converts 18 of the 40 models `keras.applications` exports", "bench/zoo.py lists 17"),
    ("| `inspector.model_name` |", "| `inspector.model_title` |", "Metadata keys"),
])
def test_a_false_claim_in_the_readme_is_caught(monkeypatch, capsys, old, new, expected):
    _with(monkeypatch, "README.md", old, new)
    assert expected in _problems(monkeypatch, capsys)


@pytest.mark.parametrize("path, old, new, expected", [
    ("docs/audit.md", '"near_duplicate_pairs": 1,', '"near_duplicate_pairs": 1, "dead_ratio": 0.1,', "dead_ratio"),
    ("docs/audit.md", "| `image_response` |", "| `image_answer` |", "image_answer"),
    ("docs/diff.md", "| `cosine` |", "| `cosine_similarity` |", "cosine_similarity"),
    ("docs/prune.md", "`dead_filters_kept` (`layer`", "`dead_filters_left` (`layer`", "dead_filters_left"),
    ("docs/audit.md", "--fail-on-dead 0.02 --json audit.json --quiet", "--fail-if-dead 0.02 --json audit.json --quiet",
     "--fail-if-dead"),
])
def test_a_false_claim_in_the_docs_is_caught(monkeypatch, capsys, path, old, new, expected):
    _with(monkeypatch, path, old, new)
    assert expected in _problems(monkeypatch, capsys)


def test_an_exit_code_the_cli_does_not_give_is_caught(monkeypatch, capsys):
    monkeypatch.setattr(check_docs, "defined_exit_codes", lambda: {0, 1, 3, 130})
    err = _problems(monkeypatch, capsys)
    assert "exit-code table" in err and "exit 2 is not one of" in err
