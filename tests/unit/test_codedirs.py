"""Code directories (`runtime/codedirs.py`): packages extracted once on the host, then linked
into each sandbox's own directory with the node's modes only."""

from __future__ import annotations

import io
import stat
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from spinlet.errors import InvalidPackage, RuntimeBackendError
from spinlet.runtime.codedirs import CODE, EXTRACTED, LAYER, LAYERS, CodeDirs
from spinlet.runtime.driver import name_pattern, name_prefix

PREFIX = name_prefix("node-a")


def zip_of(*entries: tuple[str, bytes, int]) -> bytes:
    """A zip of `(name, content, unix mode)` entries."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content, mode in entries:
            info = zipfile.ZipInfo(name)
            info.external_attr = mode << 16
            archive.writestr(info, content)
    return buffer.getvalue()


PACKAGE = zip_of(
    ("main.py", b"def main(e):\n    return e\n", 0o100600),
    ("bin/tool", b"#!/bin/sh\n", 0o104777),  # set-uid, world-writable, executable
    ("lib/link", b"/etc/passwd", 0o120777),  # a symlink entry: written as a file
    ("lib/deep/data.txt", b"data", 0o100666),
)


@pytest.fixture
def dirs(tmp_path: Path) -> CodeDirs:
    return CodeDirs(tmp_path / "code", name_pattern("node-a"))


def test_a_filled_directory_has_the_nodes_modes_only(dirs: CodeDirs) -> None:
    dirs.make(PREFIX + "00000001")
    code = dirs.fill(PREFIX + "00000001", PACKAGE)
    assert code == dirs.root / (PREFIX + "00000001") / "code"
    modes = {
        path.relative_to(code).as_posix(): stat.S_IMODE(path.lstat().st_mode)
        for path in code.rglob("*")
    }
    assert modes == {
        "main.py": 0o644,
        "bin": 0o755,
        "bin/tool": 0o755,
        "lib": 0o755,
        "lib/link": 0o755,  # its mode said executable
        "lib/deep": 0o755,
        "lib/deep/data.txt": 0o644,
    }
    assert all(path.is_dir() or path.lstat().st_mode & stat.S_IFREG for path in code.rglob("*"))
    assert (code / "lib" / "link").read_bytes() == b"/etc/passwd"  # a file, not a link
    assert stat.S_IMODE(code.parent.stat().st_mode) == 0o755


def test_two_sandboxes_share_one_extracted_copy(dirs: CodeDirs) -> None:
    first, second = PREFIX + "00000001", PREFIX + "00000002"
    for name in (first, second):
        dirs.make(name)
    one = dirs.fill(first, PACKAGE) / "main.py"
    two = dirs.fill(second, PACKAGE) / "main.py"
    assert one.stat().st_ino == two.stat().st_ino
    assert one.stat().st_nlink == 3  # the cache's and the two sandboxes'
    assert len(list((dirs.root / EXTRACTED).iterdir())) == 1


def test_concurrent_fills_of_one_package_extract_it_once(dirs: CodeDirs) -> None:
    names = [f"{PREFIX}{i:08x}" for i in range(8)]
    for name in names:
        dirs.make(name)
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda name: dirs.fill(name, PACKAGE), names))
    assert all((code / "lib" / "deep" / "data.txt").read_bytes() == b"data" for code in codes)
    assert len(list((dirs.root / EXTRACTED).iterdir())) == 1  # one copy, no scratch left
    assert len({(code / "main.py").stat().st_ino for code in codes}) == 1


def test_removal_and_stale_directories(dirs: CodeDirs) -> None:
    kept, gone = PREFIX + "00000001", PREFIX + "00000002"
    other = name_prefix("node-b") + "00000003"
    for name in (kept, gone, other):
        dirs.make(name)
    dirs.fill(kept, PACKAGE)
    dirs.fill(gone, zip_of(("main.py", b"x = 2\n", 0o100644)))
    dirs.remove_stale({kept})
    assert sorted(p.name for p in dirs.root.iterdir()) == sorted([EXTRACTED, kept, other])
    # Only the package a held sandbox links to stays extracted.
    assert len(list((dirs.root / EXTRACTED).iterdir())) == 1
    dirs.remove(kept)
    dirs.remove_stale(set())
    assert sorted(p.name for p in dirs.root.iterdir()) == sorted([EXTRACTED, other])
    assert list((dirs.root / EXTRACTED).iterdir()) == []


@pytest.mark.parametrize(
    ("package", "message"),
    [
        (b"not a zip", "not a valid zip archive"),
        (zip_of(("../evil.py", b"", 0o100644)), "points outside the package"),
        (zip_of(("/abs.py", b"", 0o100644)), "points outside the package"),
    ],
)
def test_a_package_that_cannot_be_extracted_is_invalid(
    dirs: CodeDirs, package: bytes, message: str
) -> None:
    dirs.make(PREFIX + "00000001")
    with pytest.raises(InvalidPackage, match=message):
        dirs.fill(PREFIX + "00000001", package)
    assert list((dirs.root / EXTRACTED).iterdir()) == []  # no scratch left


def make_layer(directory: Path) -> Path:
    """An extracted layer as the layer cache keeps it: the node's modes, regular files."""
    (directory / "yaml").mkdir(parents=True)
    (directory / "yaml" / "__init__.py").write_text("VERSION = 1\n")
    (directory / "_yaml.so").write_bytes(b"\x7fELF")
    (directory / "_yaml.so").chmod(0o755)
    return directory


def test_a_layer_is_linked_beside_the_code(dirs: CodeDirs) -> None:
    """Every sandbox of every function with that layer shares the cache's files."""
    layer = make_layer(dirs.root / LAYERS / "abc")
    first, second = PREFIX + "00000001", PREFIX + "00000002"
    for name in (first, second):
        dirs.make(name)
    code = dirs.fill(first, PACKAGE, layer)
    dirs.fill(second, zip_of(("main.py", b"x = 2\n", 0o100644)), layer)
    linked = code.parent / LAYER
    assert sorted(p.relative_to(linked).as_posix() for p in linked.rglob("*")) == [
        "_yaml.so",
        "yaml",
        "yaml/__init__.py",
    ]
    assert (linked / "_yaml.so").stat().st_ino == (layer / "_yaml.so").stat().st_ino
    assert (layer / "yaml" / "__init__.py").stat().st_nlink == 3  # the cache's and the two
    assert stat.S_IMODE((linked / "_yaml.so").stat().st_mode) == 0o755
    assert stat.S_IMODE((linked / "yaml").stat().st_mode) == 0o755
    assert sorted(p.name for p in code.parent.iterdir()) == [CODE, LAYER]


def test_a_fill_replaces_the_layer_that_was_there(dirs: CodeDirs) -> None:
    name = PREFIX + "00000001"
    dirs.make(name)
    old = make_layer(dirs.root / LAYERS / "old")
    new = dirs.root / LAYERS / "new"
    new.mkdir()
    (new / "only_new.py").write_text("")
    dirs.fill(name, PACKAGE, old)
    code = dirs.fill(name, PACKAGE, new)
    assert [p.name for p in (code.parent / LAYER).iterdir()] == ["only_new.py"]
    dirs.fill(name, PACKAGE)  # now without one
    assert not (code.parent / LAYER).exists()


def test_a_layer_link_never_follows_a_symlink(dirs: CodeDirs, tmp_path: Path) -> None:
    """A symlink in a layer directory would otherwise hand the sandbox any file of the host."""
    secret = tmp_path / "secret"
    secret.write_text("host file")
    layer = make_layer(dirs.root / LAYERS / "abc")
    (layer / "yaml" / "escape").symlink_to(secret)
    (layer / "outside").symlink_to(tmp_path, target_is_directory=True)
    name = PREFIX + "00000001"
    dirs.make(name)
    linked = dirs.fill(name, PACKAGE, layer).parent / LAYER
    assert not (linked / "yaml" / "escape").exists()
    assert not (linked / "outside").exists()
    assert secret.stat().st_nlink == 1


def test_a_missing_layer_is_a_backend_error(dirs: CodeDirs) -> None:
    name = PREFIX + "00000001"
    dirs.make(name)
    with pytest.raises(RuntimeBackendError, match=f"cannot prepare the code of sandbox {name}"):
        dirs.fill(name, PACKAGE, dirs.root / LAYERS / "absent")
