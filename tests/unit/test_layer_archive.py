"""A layer's archive: deterministic when packed, nothing but files and directories when unpacked."""

from __future__ import annotations

import io
import os
import stat
import tarfile
from pathlib import Path

import pytest

from spinlet.errors import LayerBuildFailed, RuntimeBackendError
from spinlet.layers.archive import CHUNK_SIZE, pack, read_chunks, unpack


def make_tree(root: Path, *, mode: int = 0o640) -> Path:
    """A small installed layer: a package with a module, a script and an empty directory."""
    (root / "pkg" / "sub").mkdir(parents=True)
    (root / "pkg" / "empty").mkdir()
    (root / "pkg" / "__init__.py").write_text("VALUE = 1\n")
    (root / "pkg" / "sub" / "mod.py").write_bytes(b"x" * 10_000)
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_text("#!/bin/sh\n")
    for path in root.rglob("*"):
        path.chmod(0o750 if path.is_dir() or path.name == "tool" else mode)
    return root


def listing(directory: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry under `directory`: its permission bits and, for a file, its content."""
    entries: dict[str, tuple[int, bytes | None]] = {}
    for path in sorted(directory.rglob("*")):
        mode = stat.S_IMODE(path.lstat().st_mode)
        entries[path.relative_to(directory).as_posix()] = (
            mode,
            path.read_bytes() if path.is_file() else None,
        )
    return entries


def hand_made(destination: Path, *members: tuple[tarfile.TarInfo, bytes | None]) -> Path:
    with tarfile.open(destination, "w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return destination


def member(name: str, kind: bytes = tarfile.REGTYPE, *, mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = kind, mode
    return info


def test_packing_is_deterministic_whatever_the_times_owners_and_order(tmp_path: Path) -> None:
    first = make_tree(tmp_path / "a")
    second = make_tree(tmp_path / "b", mode=0o600)
    os.utime(second / "pkg" / "__init__.py", (1, 1))
    os.chown(second / "pkg" / "__init__.py", 1234, 1234)

    one = pack(first, tmp_path / "one.tar.gz")
    two = pack(second, tmp_path / "two.tar.gz")

    assert one == two
    assert (tmp_path / "one.tar.gz").read_bytes() == (tmp_path / "two.tar.gz").read_bytes()
    assert one[1] == (tmp_path / "one.tar.gz").stat().st_size


def test_a_packed_tree_unpacks_the_same_with_normalised_modes(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    pack(tree, tmp_path / "layer.tar.gz")
    with tarfile.open(tmp_path / "layer.tar.gz") as tar:
        assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in tar} == {(0, 0, "", "", 0)}

    unpack(tmp_path / "layer.tar.gz", tmp_path / "out")

    assert listing(tmp_path / "out") == {
        "bin": (0o755, None),
        "bin/tool": (0o755, b"#!/bin/sh\n"),
        "pkg": (0o755, None),
        "pkg/__init__.py": (0o644, b"VALUE = 1\n"),
        "pkg/empty": (0o755, None),
        "pkg/sub": (0o755, None),
        "pkg/sub/mod.py": (0o644, b"x" * 10_000),
    }
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o755


def test_packing_refuses_a_symlink(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    (tree / "pkg" / "link").symlink_to("/etc/passwd")
    with pytest.raises(LayerBuildFailed, match="pkg/link"):
        pack(tree, tmp_path / "layer.tar.gz")


@pytest.mark.parametrize(
    "bad",
    [
        member("../escaped.py"),
        member("/tmp/absolute.py"),
        member("pkg/../../escaped.py"),
        member("link", tarfile.SYMTYPE),
        member("hard", tarfile.LNKTYPE),
        member("null", tarfile.CHRTYPE),
        member("disk", tarfile.BLKTYPE),
        member("fifo", tarfile.FIFOTYPE),
    ],
    ids=lambda info: info.name,
)
def test_unpacking_refuses_what_is_not_a_file_or_directory_inside(
    tmp_path: Path, bad: tarfile.TarInfo
) -> None:
    if bad.issym() or bad.islnk():
        bad.linkname = "pkg/__init__.py" if bad.islnk() else "/etc/passwd"
    archive = hand_made(
        tmp_path / "bad.tar",
        (member("pkg", tarfile.DIRTYPE, mode=0o755), None),
        (member("pkg/__init__.py"), b""),
        (bad, b"" if bad.isreg() else None),
    )
    with pytest.raises(RuntimeBackendError, match="archive"):
        unpack(archive, tmp_path / "out")
    assert not (tmp_path / "escaped.py").exists()
    assert not Path("/tmp/absolute.py").exists()
    assert not any(path.is_symlink() for path in (tmp_path / "out").rglob("*"))


def test_unpacking_drops_set_id_bits_and_write_bits_for_others(tmp_path: Path) -> None:
    archive = hand_made(
        tmp_path / "modes.tar",
        (member("pkg", tarfile.DIRTYPE, mode=0o7777), None),
        (member("pkg/setuid", mode=0o4777), b"#!/bin/sh\n"),
        (member("pkg/writable.py", mode=0o666), b""),
    )
    unpack(archive, tmp_path / "out")
    assert listing(tmp_path / "out") == {
        "pkg": (0o755, None),
        "pkg/setuid": (0o755, b"#!/bin/sh\n"),
        "pkg/writable.py": (0o644, b""),
    }


def test_unpacking_wants_an_empty_directory(tmp_path: Path) -> None:
    pack(make_tree(tmp_path / "tree"), tmp_path / "layer.tar.gz")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "left.py").write_text("")
    with pytest.raises(RuntimeBackendError, match="empty directory"):
        unpack(tmp_path / "layer.tar.gz", tmp_path / "out")


def test_a_damaged_archive_is_refused(tmp_path: Path) -> None:
    pack(make_tree(tmp_path / "tree"), tmp_path / "layer.tar.gz")
    data = (tmp_path / "layer.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(RuntimeBackendError, match="cannot be unpacked"):
        unpack(tmp_path / "cut.tar.gz", tmp_path / "out")


def test_chunks_cover_the_file_in_order(tmp_path: Path) -> None:
    data = os.urandom(2 * CHUNK_SIZE + 5)
    (tmp_path / "blob").write_bytes(data)
    chunks = list(read_chunks(tmp_path / "blob"))
    assert [len(chunk) for chunk in chunks] == [CHUNK_SIZE, CHUNK_SIZE, 5]
    assert b"".join(chunks) == data
