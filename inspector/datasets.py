"""Datasets as image inputs: folders (optionally recursive), globs, lists of paths, WebDataset tar shards.

``collect(paths)`` turns what a user names into a list of images in a stable order: each a path, or a
``TarMember`` (a shard's member, read from the shard by offset when it is decoded: never extracted,
never joined to a path). Only the list is held: a small string per image, the pixels decoded batch by
batch (inspector.preprocess.load_image, bomb-checked). ``select`` takes the first N or a seeded sample.

- a directory: its image files (sorted; with ``recursive``, every folder below it, symlinked folders
  not followed);
- a path that does not exist and holds ``*``, ``?`` or ``[``: a glob (``**`` crosses folders), sorted;
- a ``.txt``, ``.lst`` or ``.csv`` file: a list of images, one a line (CSV: the column named ``path``,
  ``image``, ``file`` or ``filename``, else the first); relative entries are relative to the list's folder;
- a ``.tar`` file: a WebDataset shard (or any uncompressed tar): its members with an image extension,
  in the shard's order, each keyed ``SHARD::MEMBER``;
- any other file: an image.
"""

from __future__ import annotations

import glob
import os
import random
from typing import Iterable, Sequence

from .errors import InspectorError
from .preprocess import EncodedImage

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
LIST_EXTENSIONS = (".txt", ".lst", ".csv")
TAR_EXTENSIONS = (".tar",)
COMPRESSED_TAR = (".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar.zst")
PATH_COLUMNS = ("path", "image", "file", "filename")
# A member larger than this is refused unread (an image of the largest size load_image accepts is far smaller).
MAX_MEMBER_BYTES = 256 << 20
_GLOB_CHARS = ("*", "?", "[")


class TarMember(EncodedImage):
    """One image inside a tar shard: ``SHARD::MEMBER`` as a string, its bytes read at ``offset``."""

    shard: str
    member: str
    offset: int
    size: int

    def __new__(cls, shard: str, member: str, offset: int, size: int):
        self = super().__new__(cls, f"{shard}::{member}")
        self.shard, self.member, self.offset, self.size = shard, member, offset, size
        return self

    def __reduce__(self):  # pickled by its fields (to worker processes)
        return TarMember, (self.shard, self.member, self.offset, self.size)

    def read(self) -> bytes:
        if self.size > MAX_MEMBER_BYTES:
            raise InspectorError(f"tar member refused: {self} is {self.size:,} bytes "
                                 f"(over {MAX_MEMBER_BYTES:,}); not an image this tool decodes")
        try:
            with open(self.shard, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read(self.size)
        except OSError as exc:
            raise InspectorError(f"cannot read tar shard {self.shard} ({exc.strerror or exc})") from None
        if len(data) != self.size:
            raise InspectorError(f"tar shard {self.shard} is shorter than its member {self.member} says "
                                 "(truncated or changed since it was listed)")
        return data


def is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def collect(paths: Iterable[str | os.PathLike], recursive: bool = False) -> list[str]:
    """The images ``paths`` name (see the module docstring), in a stable order."""
    found: list[str] = []
    for path in paths:
        found.extend(_expand(path, recursive, lists=True))
    return found


def _expand(path, recursive: bool, lists: bool) -> list[str]:
    if isinstance(path, EncodedImage):
        return [path]
    path = os.fspath(path)
    if os.path.isdir(path):
        return _folder(path, recursive)
    if os.path.isfile(path):
        lower = path.lower()
        if lower.endswith(COMPRESSED_TAR):
            raise InspectorError(f"compressed tar shard {path}: members cannot be read in place; "
                                 "use uncompressed .tar shards (WebDataset's usual form)")
        if lower.endswith(TAR_EXTENSIONS):
            return tar_members(path)
        if lower.endswith(LIST_EXTENSIONS):
            if not lists:
                raise InspectorError(f"a list of images inside a list: {path}; list images, folders or shards")
            return [image for entry in list_entries(path) for image in _expand(entry, recursive, lists=False)]
        return [path]
    if not os.path.exists(path) and any(char in path for char in _GLOB_CHARS):
        matches = sorted(glob.glob(path, recursive=True))
        if not matches:
            raise InspectorError(f"no files match {path}")
        images = []
        for match in matches:
            if os.path.isdir(match):
                continue  # a glob names files; its folders are not expanded
            lower = match.lower()
            if is_image_name(match) or lower.endswith(TAR_EXTENSIONS):
                images.extend(_expand(match, recursive, lists=False))
        if not images:
            raise InspectorError(f"no images among the {len(matches)} paths matching {path} "
                                 f"(looked for {', '.join(IMAGE_EXTENSIONS)} and .tar shards)")
        return images
    raise InspectorError(f"image not found: {path}")


def _folder(path: str, recursive: bool) -> list[str]:
    images: list[str] = []
    try:
        if recursive:
            def fail(exc):
                raise InspectorError(f"cannot list image directory {exc.filename} ({exc.strerror or exc})")

            for root, folders, names in os.walk(path, onerror=fail):
                folders.sort()
                images.extend(os.path.join(root, name) for name in sorted(names) if is_image_name(name))
        else:
            images = [os.path.join(path, name) for name in
                      sorted(entry.name for entry in os.scandir(path) if entry.is_file() and is_image_name(entry.name))]
    except OSError as exc:
        raise InspectorError(f"cannot list image directory {path} ({exc.strerror or exc})") from None
    if not images:
        where = "in or below" if recursive else "in"
        raise InspectorError(f"no images {where} directory {path} (looked for {', '.join(IMAGE_EXTENSIONS)}); "
                             + ("pass image files or another directory" if recursive else
                                "pass image files, another directory, or --recursive for its subfolders"))
    return images


def list_entries(path: str) -> list[str]:
    """The paths a .txt/.lst (one a line, '#' comments) or .csv list names, relative ones from its folder."""
    import csv

    base = os.path.dirname(os.path.abspath(path))
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            if path.lower().endswith(".csv"):
                rows = list(csv.reader(handle))
                if not rows:
                    raise InspectorError(f"empty list of images: {path}")
                header = [cell.strip().lower() for cell in rows[0]]
                column = next((header.index(name) for name in PATH_COLUMNS if name in header), None)
                if column is None:
                    column, rows = 0, rows  # no header naming a path column: the first column, every row
                else:
                    rows = rows[1:]
                entries = [row[column].strip() for row in rows if len(row) > column and row[column].strip()]
            else:
                entries = [line.strip() for line in handle if line.strip() and not line.lstrip().startswith("#")]
    except UnicodeDecodeError:
        raise InspectorError(f"list of images {path} is not UTF-8 text; give one path a line") from None
    except OSError as exc:
        raise InspectorError(f"cannot read list of images {path} ({exc.strerror or exc})") from None
    if not entries:
        raise InspectorError(f"empty list of images: {path}")
    return [entry if os.path.isabs(entry) else os.path.join(base, entry) for entry in entries]


def tar_members(shard: str) -> list[TarMember]:
    """The image members of an uncompressed tar, in order: read from its headers, none extracted."""
    import tarfile

    members: list[TarMember] = []
    try:
        with tarfile.open(shard, mode="r:") as tar:
            while True:
                info = tar.next()
                if info is None:
                    break
                tar.members = []  # the headers are not kept: the index holds only TarMembers
                if info.isreg() and is_image_name(info.name):
                    members.append(TarMember(shard, info.name, info.offset_data, info.size))
    except tarfile.ReadError as exc:
        raise InspectorError(f"not an uncompressed tar shard: {shard} ({exc}); WebDataset shards are plain .tar"
                             ) from None
    except OSError as exc:
        raise InspectorError(f"cannot read tar shard {shard} ({exc.strerror or exc})") from None
    if not members:
        raise InspectorError(f"no images in tar shard {shard} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return members


def select(images: Sequence[str], limit: int | None = None, sample: int | None = None,
           seed: int = 0) -> list[str]:
    """The first ``limit`` images, or ``sample`` of them drawn with ``seed`` (kept in the dataset's order)."""
    if limit is not None and sample is not None:
        raise InspectorError("--limit and --sample both choose images; give one")
    if limit is not None:
        return list(images[:limit])
    if sample is not None and sample < len(images):
        chosen = sorted(random.Random(seed).sample(range(len(images)), sample))
        return [images[i] for i in chosen]
    return list(images)
