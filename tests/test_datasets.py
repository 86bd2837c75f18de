"""Datasets as audit inputs: folders (recursive), globs, lists, WebDataset tar shards, Parquet, --limit and --sample.

Tiny files made in each test; a tar shard's images must give the audit the same statistics as the same
images as files, read in place (nothing extracted), through the bomb-checked decoder."""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import tarfile
import zlib

import numpy as np
import pytest
from PIL import Image

from inspector.audit import audit
from inspector.cli import main
from inspector.datasets import TarMember, collect, select, tar_members
from inspector.errors import InspectorError
from inspector.preprocess import load_image
from test_audit import small_net


def png_bytes(seed: int, size=(14, 12)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def write_images(folder, names, first_seed=0):
    paths = []
    for i, name in enumerate(names):
        path = os.path.join(folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as handle:
            handle.write(png_bytes(first_seed + i))
        paths.append(path)
    return paths


def write_shard(path, members: dict[str, bytes]):
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return str(path)


def test_folders_flat_and_recursive_in_a_stable_order(tmp_path):
    top = write_images(str(tmp_path), ["b.png", "a.png"])
    deep = write_images(str(tmp_path), ["sub/z/c.png", "sub/d.png"], 5)
    (tmp_path / "notes.txt").write_text("not listed: only image extensions count in a folder")
    assert collect([tmp_path]) == sorted(top)
    assert collect([tmp_path], recursive=True) == [*sorted(top), deep[1], deep[0]]
    (tmp_path / "sub" / "empty").mkdir()
    with pytest.raises(InspectorError, match="--recursive"):
        collect([tmp_path / "sub" / "empty"])


def test_globs_and_lists_of_paths(tmp_path):
    paths = write_images(str(tmp_path), ["one/a.png", "one/b.jpg.png", "two/c.png"])
    assert collect([str(tmp_path / "**" / "*.png")]) == sorted(paths)
    assert collect([str(tmp_path / "one" / "*.png")]) == sorted(paths[:2])
    with pytest.raises(InspectorError, match="no files match"):
        collect([str(tmp_path / "*.webp")])
    listed = tmp_path / "list.txt"
    listed.write_text(f"# chosen\ntwo/c.png\n\n{paths[0]}\n")  # relative to the list's folder, or absolute
    assert collect([listed]) == [paths[2], paths[0]]
    table = tmp_path / "set.csv"
    table.write_text("label,path\n3,one/a.png\n1,two/c.png\n")
    assert collect([table]) == [paths[0], paths[2]]
    bare = tmp_path / "bare.csv"
    bare.write_text("one/a.png,7\n")
    assert collect([bare]) == [paths[0]]
    (tmp_path / "empty.txt").write_text("\n# nothing\n")
    with pytest.raises(InspectorError, match="empty list"):
        collect([tmp_path / "empty.txt"])


def test_tar_members_are_read_in_place_never_extracted_nor_joined(tmp_path):
    shard = write_shard(tmp_path / "shard-000.tar", {
        "0001.png": png_bytes(1), "0001.cls": b"3", "../../escape.png": png_bytes(2), "dir/0003.png": png_bytes(3)})
    before = sorted(os.listdir(tmp_path))
    members = collect([shard])
    assert [m.member for m in members] == ["0001.png", "../../escape.png", "dir/0003.png"]
    assert all(isinstance(m, TarMember) and str(m).startswith(shard + "::") for m in members)
    decoded = load_image(members[1], (14, 12))
    reference = np.asarray(Image.open(io.BytesIO(png_bytes(2))).convert("RGB"))
    np.testing.assert_array_equal(decoded, reference)
    assert pickle.loads(pickle.dumps(members[1])).read() == png_bytes(2)  # shipped to workers by its fields
    assert sorted(os.listdir(tmp_path)) == before and not (tmp_path.parent / "escape.png").exists()


def test_a_bomb_inside_a_shard_is_refused_from_its_header(tmp_path):
    def chunk(kind, payload):
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    bomb = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    (member,) = tar_members(write_shard(tmp_path / "s.tar", {"bomb.png": bomb}))
    with pytest.raises(InspectorError, match="decompression bomb"):
        load_image(member, (16, 16))


def test_compressed_or_broken_shards_are_refused_with_one_line(tmp_path):
    with tarfile.open(tmp_path / "s.tar.gz", "w:gz") as tar:
        info = tarfile.TarInfo("a.png")
        data = png_bytes(0)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(InspectorError, match="uncompressed .tar"):
        collect([tmp_path / "s.tar.gz"])
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 40)
    with pytest.raises(InspectorError, match="tar"):
        collect([tmp_path / "junk.tar"])


def test_limit_and_seeded_sample():
    images = [f"img{i:03d}.png" for i in range(50)]
    assert select(images, limit=5) == images[:5]
    first = select(images, sample=10, seed=3)
    assert first == select(images, sample=10, seed=3) and first == sorted(first) and len(set(first)) == 10
    assert first != select(images, sample=10, seed=4)
    assert select(images, sample=80) == images
    with pytest.raises(InspectorError, match="give one"):
        select(images, limit=2, sample=2)


def test_an_audit_of_a_shard_equals_the_audit_of_the_same_images_as_files(save, tmp_path):
    data = {f"{i:04d}.png": png_bytes(10 + i) for i in range(12)}
    folder = tmp_path / "files"
    folder.mkdir()
    for name, content in data.items():
        (folder / name).write_bytes(content)
    shard = write_shard(tmp_path / "shard.tar", data)
    path = save(small_net(dead={"conv2": [3]})[0])
    kwargs = dict(batch=5, preprocess="tf", device="cpu", quiet=True)
    from_files, from_shard = audit(path, [str(folder)], **kwargs), audit(path, [shard], **kwargs)
    assert from_files.images == 9  # 3 of the 12 held out to verify the verdicts
    a, b = from_files.to_dict(), from_shard.to_dict()
    assert a.pop("model") == b.pop("model")
    assert a == b  # statistics, verdicts, the held-out verification: the same images, the same audit


def test_cli_limit_sample_and_refusals(save, tmp_path, capsys):
    write_images(str(tmp_path / "set"), [f"d{i % 3}/img{i:02d}.png" for i in range(12)])
    path = save(small_net()[0])
    out = tmp_path / "a.json"
    code = main(["audit", path, str(tmp_path / "set"), "--recursive", "--sample", "9", "--seed", "1",
                 "--preprocess", "tf", "--device", "cpu", "-q", "--json", str(out)])
    assert code == 0
    assert json.loads(out.read_text())["images"]["requested"] == 9
    code = main(["audit", path, str(tmp_path / "set"), "-r", "--limit", "4", "--preprocess", "tf", "--device", "cpu",
                 "-q", "--json", str(out)])
    assert code == 0 and json.loads(out.read_text())["images"]["requested"] == 4
    capsys.readouterr()
    code = main(["audit", path, str(tmp_path / "set"), "--preprocess", "tf", "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "--recursive" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    code = main(["audit", path, str(tmp_path / "set"), "-r", "--ray-threads", "2", "--preprocess", "tf", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "give --ray too" in err and len(err.strip().splitlines()) == 1


def test_ray_flag_without_ray_says_how_to_install_it(save, tmp_path):
    import subprocess
    import sys

    paths = write_images(str(tmp_path), [f"img{i}.png" for i in range(3)])
    # Ray made unimportable in a fresh interpreter (`make .venv` installs it).
    code = ("import sys; sys.modules['ray'] = None; from inspector.cli import main; "
            f"sys.exit(main(['audit', {save(small_net()[0])!r}, *{paths!r}, '--ray', '--preprocess', 'tf', "
            "'--device', 'cpu', '-q']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "pip install 'inspector-cnn[ray]'" in done.stderr and "Traceback" not in done.stderr

# ------------------------------------------------------------------------------------------------ Parquet

def pyarrow():
    """(pyarrow, pyarrow.parquet); skipped where absent, failed where INSPECTOR_REQUIRE_MODELS=1 (CI: `make .venv`
    installs the ray extra, which brings pyarrow)."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        if os.environ.get("INSPECTOR_REQUIRE_MODELS", "0") not in ("", "0"):
            raise
        pytest.skip("pyarrow is not installed (pip install 'inspector-cnn[parquet]')")
    return pa, pq


def write_parquet(path, images: list[bytes], keys=None, row_group_size=None, struct=False):
    """A Parquet file of ``images`` (encoded bytes) in an ``image`` column, ``keys`` in ``key`` (when given)."""
    pa, pq = pyarrow()
    column = (pa.array([{"bytes": data, "path": None} for data in images],
                       pa.struct([("bytes", pa.binary()), ("path", pa.string())])) if struct
              else pa.array(images, pa.binary()))
    table = pa.table({"image": column, **({"key": keys} if keys is not None else {})})
    pq.write_table(table, str(path), row_group_size=row_group_size)
    return str(path)


def test_parquet_rows_are_listed_from_their_keys_and_decoded_by_our_own_decoder(tmp_path):
    from inspector.datasets import ParquetRow

    data = [png_bytes(20 + i) for i in range(7)]
    path = write_parquet(tmp_path / "set.parquet", data, [f"k{i}" for i in range(7)], row_group_size=3)
    rows = collect([path])
    assert [str(r) for r in rows] == [f"{path}::k{i}" for i in range(7)]
    assert [(r.group, r.row) for r in rows] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2), (2, 0)]
    for i in (4, 0, 6, 5):  # out of order too: the cursor starts a row group again when it must
        reference = np.asarray(Image.open(io.BytesIO(data[i])).convert("RGB"))
        np.testing.assert_array_equal(load_image(rows[i], (14, 12)), reference)
    assert all(isinstance(r, ParquetRow) for r in rows)
    assert pickle.loads(pickle.dumps(rows[5])).read() == data[5]  # shipped to workers by its fields
    # Hugging Face datasets' Image feature (a struct of bytes and path), and no key column: the row's number.
    hf = write_parquet(tmp_path / "hf.parquet", data[:3], struct=True)
    assert [str(r) for r in collect([hf])] == [f"{hf}::{i}" for i in range(3)]
    assert collect([hf])[2].read() == data[2]


def test_parquet_images_are_read_in_order_one_row_group_pass(tmp_path, monkeypatch):
    from inspector import datasets

    data = [png_bytes(i) for i in range(40)]
    path = write_parquet(tmp_path / "set.parquet", data, row_group_size=20)
    opened = []
    original = datasets._ParquetCursor._open
    monkeypatch.setattr(datasets._ParquetCursor, "_open", lambda self, image: (opened.append(image.group),
                                                                              original(self, image))[1])
    datasets._CURSOR.where = None
    assert [row.read() for row in collect([path])] == data
    assert opened == [0, 1]  # each row group read once, front to back: never the file at once


def test_a_folder_and_globs_of_parquet_files(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    write_parquet(folder / "b.parquet", [png_bytes(3)], ["x"])
    write_parquet(folder / "a.parquet", [png_bytes(1), png_bytes(2)], ["y", "z"])
    (folder / "c.png").write_bytes(png_bytes(4))
    listed = [str(r) for r in collect([folder])]
    assert listed == [f"{folder}/a.parquet::y", f"{folder}/a.parquet::z", f"{folder}/b.parquet::x", f"{folder}/c.png"]
    assert [str(r) for r in collect([str(folder / "*.parquet")])] == listed[:3]


def test_bad_parquet_inputs_are_refused_with_one_line(tmp_path, monkeypatch):
    pa, pq = pyarrow()
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all" * 20)
    with pytest.raises(InspectorError, match="not a Parquet file"):
        collect([tmp_path / "junk.parquet"])
    pq.write_table(pa.table({"pixels": [b"x"], "key": ["a"]}), str(tmp_path / "cols.parquet"))
    with pytest.raises(InspectorError, match="no 'image' column .*pixels"):
        collect([tmp_path / "cols.parquet"])
    pq.write_table(pa.table({"image": [1, 2]}), str(tmp_path / "ints.parquet"))
    with pytest.raises(InspectorError, match="not encoded image bytes"):
        collect([tmp_path / "ints.parquet"])
    # The same decompression-bomb check as a file's, from the header.
    bomb_png = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
                + _chunk(b"IDAT", zlib.compress(b"\0" * 64)) + _chunk(b"IEND", b""))
    (bomb,) = collect([write_parquet(tmp_path / "bomb.parquet", [bomb_png], ["bomb"])])
    with pytest.raises(InspectorError, match="decompression bomb"):
        load_image(bomb, (16, 16))
    from inspector import datasets

    monkeypatch.setattr(datasets, "MAX_MEMBER_BYTES", 100)
    (big,) = collect([write_parquet(tmp_path / "big.parquet", [png_bytes(0)], ["big"])])
    with pytest.raises(InspectorError, match="refused"):
        big.read()


def _chunk(kind, payload):
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def test_an_audit_of_parquet_equals_the_audit_of_the_same_images_as_files(save, tmp_path):
    data = [png_bytes(10 + i) for i in range(12)]
    folder = tmp_path / "files"
    folder.mkdir()
    for i, content in enumerate(data):
        (folder / f"{i:04d}.png").write_bytes(content)
    one = write_parquet(tmp_path / "one.parquet", data, [f"{i:04d}" for i in range(12)], row_group_size=5)
    split = tmp_path / "split"
    split.mkdir()
    write_parquet(split / "part-0.parquet", data[:7], row_group_size=4)
    write_parquet(split / "part-1.parquet", data[7:], struct=True)
    path = save(small_net(dead={"conv2": [3]})[0])
    kwargs = dict(batch=5, preprocess="tf", device="cpu", quiet=True)
    reference = audit(path, [str(folder)], **kwargs).to_dict()
    reference.pop("model")
    assert (reference["images"]["count"], reference["images"]["held_out"]) == (9, 3)
    for source in (one, str(split)):
        other = audit(path, [source], **kwargs).to_dict()
        other.pop("model")
        assert other == reference, source


def test_cli_parquet_with_limit_and_sample_gives_the_folders_json(save, tmp_path):
    data = [png_bytes(30 + i) for i in range(14)]
    folder = tmp_path / "files"
    folder.mkdir()
    for i, content in enumerate(data):
        (folder / f"{i:04d}.png").write_bytes(content)
    shards = write_parquet(tmp_path / "set.parquet", data, row_group_size=4)
    path = save(small_net()[0])
    common = ["--preprocess", "tf", "--device", "cpu", "-q", "--batch", "3"]
    for choose in (["--limit", "11"], ["--sample", "10", "--seed", "5"]):
        outputs = []
        for source in (str(folder), shards):
            out = tmp_path / "a.json"
            assert main(["audit", path, source, *choose, *common, "--json", str(out)]) == 0
            outputs.append(json.loads(out.read_text()))
            outputs[-1].pop("model")
        assert outputs[0] == outputs[1], choose
        assert outputs[0]["images"]["requested"] == int(choose[1])


def test_parquet_without_pyarrow_says_which_extra_to_install(save, tmp_path):
    import subprocess
    import sys

    paths = write_images(str(tmp_path), ["a.png"])
    shards = write_parquet(tmp_path / "set.parquet", [png_bytes(0)])
    model = save(small_net()[0])
    # pyarrow made unimportable in a fresh interpreter; a folder audit must not import it at all.
    code = ("import sys; sys.modules['pyarrow'] = None; from inspector.cli import main; "
            f"assert main(['audit', {model!r}, {paths[0]!r}, '--preprocess', 'tf', '--device', 'cpu', '-q']) == 0; "
            f"sys.exit(main(['audit', {model!r}, {shards!r}, '--preprocess', 'tf', '--device', 'cpu', '-q']))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines() == [done.stderr.strip()] and "Traceback" not in done.stderr
    assert "pip install 'inspector-cnn[parquet]'" in done.stderr and "set.parquet" in done.stderr
    code = (f"import sys; from inspector.cli import main; "
            f"main(['audit', {model!r}, {paths[0]!r}, '--preprocess', 'tf', '--device', 'cpu', '-q']); "
            "assert 'pyarrow' not in sys.modules, 'pyarrow imported'")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
