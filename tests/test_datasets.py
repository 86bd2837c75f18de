"""Datasets as audit inputs: folders (recursive), globs, lists, WebDataset tar shards, --limit and --sample.

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


@pytest.mark.skipif(__import__("importlib").util.find_spec("ray") is not None, reason="Ray is installed here")
def test_ray_flag_without_ray_says_how_to_install_it(save, tmp_path, capsys):
    paths = write_images(str(tmp_path), [f"img{i}.png" for i in range(3)])
    code = main(["audit", save(small_net()[0]), *paths, "--ray", "--preprocess", "tf", "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'inspector-cnn[ray]'" in err and "Traceback" not in err
