"""Write files so that a crash or Ctrl-C never leaves half of one behind."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile

from .errors import InspectorError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temp path beside ``path``; on success rename it over ``path``, else delete it."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=".part", dir=folder)
    os.close(fd)
    try:
        yield tmp
        # mkstemp makes the file private (0600); the result should get the
        # permissions any other new file gets here.
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def new_file_mode() -> int:
    """0666 less the process umask: what ``open(path, "w")`` would have given."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def ensure_dir(folder: str | os.PathLike, option: str = "-o") -> str:
    """Create ``folder`` if needed and prove it writable, before any work starts.

    ``option`` names the flag that chose the folder, for the error message.
    """
    folder = os.fspath(folder)
    try:
        os.makedirs(folder, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".inspector-write-test.", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise InspectorError(
            f"output directory '{folder}' cannot be created or written ({exc.strerror or exc}); "
            f"choose another with {option}") from None
    return folder


def ensure_parent(path: str | os.PathLike, option: str = "-o") -> str:
    """Check that the folder a file will be written to exists and is writable."""
    path = os.fspath(path)
    ensure_dir(os.path.dirname(os.path.abspath(path)), option)
    return path


_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def safe_name(text: str) -> str:
    """A layer or model name made safe as part of a file name."""
    return _UNSAFE.sub("_", text).strip("._") or "layer"
