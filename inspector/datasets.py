"""Datasets as image inputs: folders (optionally recursive), globs, lists of paths, WebDataset tar shards,
Parquet files of encoded images.

``collect(paths)`` turns what a user names into a list of images in a stable order: each a path, a
``TarMember`` (a shard's member, read from the shard by offset when it is decoded: never extracted,
never joined to a path) or a ``ParquetRow`` (a row of a Parquet file, read by row group and row when it
is decoded). Only the list is held: a small string per image, the pixels decoded batch by batch
(inspector.preprocess.load_image, bomb-checked). ``select`` takes the first N or a seeded sample.

- a directory: its image files (sorted; with ``recursive``, every folder below it, symlinked folders
  not followed);
- a path that does not exist and holds ``*``, ``?`` or ``[``: a glob (``**`` crosses folders), sorted;
- a ``.txt``, ``.lst`` or ``.csv`` file: a list of images, one a line (CSV: the column named ``path``,
  ``image``, ``file`` or ``filename``, else the first); relative entries are relative to the list's folder;
- a ``.tar`` file: a WebDataset shard (or any uncompressed tar): its members with an image extension,
  in the shard's order, each keyed ``SHARD::MEMBER``;
- a ``.parquet`` file (and those in a folder): one image a row, its encoded bytes in the ``image`` column
  (binary, or a struct with a ``bytes`` field as Hugging Face datasets write it), labelled by the ``key``
  column (else the row's number) as ``FILE::KEY``. Needs pyarrow (``pip install 'inspector-cnn[parquet]'``),
  imported only when a Parquet file is named. The listing reads the ``key`` column alone; decoding
  streams the ``image`` column page by page (``_ParquetCursor``): memory is one page and one record batch,
  not the file nor its row group;
- any other file: an image.
"""

from __future__ import annotations

import glob
import os
import random
import threading
from typing import Iterable, Sequence

from .errors import InspectorError
from .preprocess import EncodedImage

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")
LIST_EXTENSIONS = (".txt", ".lst", ".csv")
TAR_EXTENSIONS = (".tar",)
PARQUET_EXTENSIONS = (".parquet",)
PARQUET_INSTALL = "pip install 'inspector-cnn[parquet]'"
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


class ParquetRow(EncodedImage):
    """One image in a Parquet file: ``FILE::KEY`` as a string, its bytes row ``row`` of row group ``group``."""

    file: str
    group: int
    row: int
    key: str

    def __new__(cls, file: str, group: int, row: int, key: str):
        self = super().__new__(cls, f"{file}::{key}")
        self.file, self.group, self.row, self.key = file, group, row, key
        return self

    def __reduce__(self):  # pickled by its fields (to worker processes)
        return ParquetRow, (self.file, self.group, self.row, self.key)

    def read(self) -> bytes:
        with _CURSOR_LOCK:
            return _CURSOR.read(self)


class _ParquetCursor:
    """Reads a Parquet file's images in order, one record batch of the ``image`` column at a time.

    The next image of the same row group is read from where the last one was (a batch's images, and the
    batches of one process, come in the dataset's order); an image behind the cursor, or in another row
    group or file, starts that row group again. pyarrow reads a row group's pages through a buffered
    stream (``buffer_size``, ``pre_buffer=False``): memory is a page and a record batch, whatever the
    row group's size."""

    ROWS = 8  # rows per record batch

    def __init__(self):
        self.where = None  # (file, group)
        self.batches = None
        self.start = 0  # the first row of self.batch
        self.batch = None  # the current record batch's image bytes (a pyarrow BinaryArray)

    def read(self, image: ParquetRow) -> bytes:
        where = (image.file, image.group)
        if where != self.where or self.batch is None or image.row < self.start:
            self._open(image)
        try:
            while image.row >= self.start + len(self.batch):
                self.start += len(self.batch)
                self.batch = _image_bytes(next(self.batches).column(0))
        except StopIteration:
            self.where = None
            raise InspectorError(f"Parquet file {image.file} has fewer rows than when it was listed "
                                 f"(row {image.row} of row group {image.group}); changed since?") from None
        except (OSError, ValueError) as exc:  # pyarrow's ArrowIOError, ArrowInvalid (a corrupt page)
            self.where = None
            raise InspectorError(f"cannot read Parquet file {image.file} ({_first_line(exc)})") from None
        cell = self.batch[image.row - self.start]
        if not cell.is_valid:
            raise InspectorError(f"no image in {image}: its 'image' cell is empty")
        buffer = cell.as_buffer()
        if buffer.size > MAX_MEMBER_BYTES:
            raise InspectorError(f"Parquet image refused: {image} is {buffer.size:,} bytes "
                                 f"(over {MAX_MEMBER_BYTES:,}); not an image this tool decodes")
        return buffer.to_pybytes()

    def _open(self, image: ParquetRow) -> None:
        handle = _parquet_file(image.file)
        self.where, self.start, self.batch = None, 0, None
        if image.group >= handle.metadata.num_row_groups:
            raise InspectorError(f"Parquet file {image.file} has fewer row groups than when it was listed")
        column = _image_column(handle, image.file)
        try:
            self.batches = handle.iter_batches(batch_size=self.ROWS, row_groups=[image.group], columns=[column],
                                               use_threads=False)
            self.batch = _image_bytes(next(self.batches).column(0))
        except StopIteration:
            raise InspectorError(f"Parquet file {image.file}: row group {image.group} is empty") from None
        except (OSError, ValueError) as exc:
            raise InspectorError(f"cannot read Parquet file {image.file} ({_first_line(exc)})") from None
        self.where = (image.file, image.group)


_CURSOR = _ParquetCursor()
_CURSOR_LOCK = threading.Lock()  # the audit's decoding thread (CUDA prefetch) beside the main one


def _pyarrow(path: str):
    """pyarrow.parquet, or one line saying which extra brings it."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InspectorError(f"Parquet input {path} needs pyarrow: {PARQUET_INSTALL}") from None
    return pq


def _parquet_file(path: str):
    pq = _pyarrow(path)
    try:
        return pq.ParquetFile(path, buffer_size=1 << 20, pre_buffer=False)
    except FileNotFoundError:
        raise InspectorError(f"Parquet file not found: {path}") from None
    except PermissionError:
        raise InspectorError(f"cannot read Parquet file {path} (permission denied)") from None
    except Exception as exc:  # noqa: BLE001 - pyarrow's ArrowInvalid and kin: not a Parquet file
        raise InspectorError(f"not a Parquet file pyarrow can read: {path} ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _image_column(handle, path: str) -> str:
    """The column holding the images: ``image``, binary or a struct with a ``bytes`` field."""
    import pyarrow as pa

    schema = handle.schema_arrow
    if "image" not in schema.names:
        raise InspectorError(f"Parquet file {path} has no 'image' column (columns: {', '.join(schema.names)}); "
                             "give one image's encoded bytes a row in 'image', its name in 'key'")
    kind = schema.field("image").type
    bytes_field = pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0
    if not (pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or bytes_field):
        raise InspectorError(f"Parquet file {path}: its 'image' column is {kind}, not encoded image bytes "
                             "(binary, or a struct with a 'bytes' field)")
    return "image"


def _image_bytes(column):
    """A record batch's image cells as binary: the column itself, or its struct's ``bytes`` field."""
    import pyarrow as pa

    return column.field("bytes") if pa.types.is_struct(column.type) else column


def parquet_rows(path: str) -> list[ParquetRow]:
    """The images of a Parquet file, in its order: the ``key`` column read (row group by row group), never
    the images."""
    handle = _parquet_file(path)
    _image_column(handle, path)
    has_key = "key" in handle.schema_arrow.names
    rows: list[ParquetRow] = []
    number = 0
    try:
        for group in range(handle.metadata.num_row_groups):
            count = handle.metadata.row_group(group).num_rows
            if has_key:
                keys = handle.read_row_group(group, columns=["key"], use_threads=False).column(0).to_pylist()
            else:
                keys = range(number, number + count)
            rows.extend(ParquetRow(path, group, row, str(key if key is not None else number + row))
                        for row, key in enumerate(keys))
            number += count
    except (OSError, ValueError) as exc:
        raise InspectorError(f"cannot read Parquet file {path} ({_first_line(exc)})") from None
    if not rows:
        raise InspectorError(f"no images in Parquet file {path} (it has no rows)")
    return rows


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
        if lower.endswith(PARQUET_EXTENSIONS):
            return parquet_rows(path)
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
            if is_image_name(match) or lower.endswith(TAR_EXTENSIONS + PARQUET_EXTENSIONS):
                images.extend(_expand(match, recursive, lists=False))
        if not images:
            raise InspectorError(f"no images among the {len(matches)} paths matching {path} "
                                 f"(looked for {', '.join(IMAGE_EXTENSIONS)}, .tar shards and .parquet files)")
        return images
    raise InspectorError(f"image not found: {path}")


def _folder(path: str, recursive: bool) -> list[str]:
    """A folder's images (sorted), its .parquet files' rows in their place."""
    names: list[str] = []
    try:
        if recursive:
            def fail(exc):
                raise InspectorError(f"cannot list image directory {exc.filename} ({exc.strerror or exc})")

            for root, folders, files in os.walk(path, onerror=fail):
                folders.sort()
                names.extend(os.path.join(root, name) for name in sorted(files) if _listed(name))
        else:
            names = [os.path.join(path, name) for name in
                     sorted(entry.name for entry in os.scandir(path) if entry.is_file() and _listed(entry.name))]
    except OSError as exc:
        raise InspectorError(f"cannot list image directory {path} ({exc.strerror or exc})") from None
    if not names:
        where = "in or below" if recursive else "in"
        raise InspectorError(f"no images {where} directory {path} (looked for {', '.join(IMAGE_EXTENSIONS)} "
                             "and .parquet); "
                             + ("pass image files or another directory" if recursive else
                                "pass image files, another directory, or --recursive for its subfolders"))
    images: list[str] = []
    for name in names:
        images.extend(parquet_rows(name) if name.lower().endswith(PARQUET_EXTENSIONS) else [name])
    return images


def _listed(name: str) -> bool:
    return is_image_name(name) or name.lower().endswith(PARQUET_EXTENSIONS)


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
