"""Package validation: what uploads are accepted, and the clear errors for the rest."""

from __future__ import annotations

import asyncio
import io
import os
import zipfile
from pathlib import Path

import pytest

from spinlet.errors import InvalidPackage, TooLarge, ValidationFailed
from spinlet.packages import PackageLimits, PackageStore, check_entry, describe, normalize

LIMITS = PackageLimits(max_size=1024 * 1024, max_unpacked_size=4 * 1024 * 1024, max_files=50)


def zip_of(files: dict[str, bytes | str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_single_python_file_is_zipped_under_its_name() -> None:
    data, module = normalize(b"def main(event):\n    return event\n", "greet.py", LIMITS)
    assert module == "greet"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        assert archive.namelist() == ["greet.py"]
    check_entry(data, "greet.main")


def test_python_with_a_syntax_error_is_refused_with_the_line() -> None:
    with pytest.raises(InvalidPackage, match=r"not valid Python.*line 2"):
        normalize(b"def main(event):\nreturn (\n", "bad.py", LIMITS)


def test_text_that_is_neither_zip_nor_python_is_refused() -> None:
    with pytest.raises(InvalidPackage):
        normalize(b"\x00\x01 definitely not code", "blob.bin", LIMITS)
    with pytest.raises(InvalidPackage, match="not a valid zip"):
        normalize(b"PK but not really", "code.zip", LIMITS)


def test_zip_with_module_is_accepted_and_entry_checked() -> None:
    data = zip_of({"main.py": "def main(e): return e", "lib/util.py": "X = 1"})
    stored, module = normalize(data, "code.zip", LIMITS)
    assert stored == data and module == "main"
    check_entry(stored, "main.main")
    with pytest.raises(InvalidPackage, match="module 'handler' is not in the package"):
        check_entry(stored, "handler.main")
    with pytest.raises(ValidationFailed, match=r"module\.function"):
        check_entry(stored, "main")


def test_package_module_entry() -> None:
    data = zip_of({"app/__init__.py": "", "app/handlers.py": "def main(e): return e"})
    check_entry(data, "app.handlers.main")


@pytest.mark.parametrize("name", ["../evil.py", "/etc/evil.py", "a/../../evil.py"])
def test_zip_entries_leaving_the_package_are_refused(name: str) -> None:
    data = zip_of({"main.py": "def main(e): return e", name: "x"})
    with pytest.raises(InvalidPackage, match="leaves the package"):
        normalize(data, "code.zip", LIMITS)


def test_zip_bomb_is_refused_before_unpacking() -> None:
    data = zip_of({"main.py": "def main(e): return e", "zeros.txt": b"\0" * (5 * 1024 * 1024)})
    assert len(data) < LIMITS.max_size
    with pytest.raises(TooLarge, match="unpacks to"):
        normalize(data, "code.zip", LIMITS)


def test_too_many_files_and_too_large_uploads() -> None:
    many = zip_of({f"m{i}.py": "" for i in range(60)})
    with pytest.raises(TooLarge, match="60 files"):
        normalize(many, "code.zip", LIMITS)
    with pytest.raises(TooLarge, match="limit is 1048576"):
        normalize(b"#" * (LIMITS.max_size + 1), "big.py", LIMITS)


def test_zip_without_python_is_refused() -> None:
    with pytest.raises(InvalidPackage, match="no Python"):
        normalize(zip_of({"README.txt": "hi"}), "code.zip", LIMITS)


async def test_package_store_is_content_addressed(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = PackageStore(tmp_path)
    data = zip_of({"main.py": "def main(e): return e"})
    package = await store.put(data)
    assert package == describe(data)
    assert await store.put(data) == package
    assert await store.get(package.sha256) == data
    await store.delete(package.sha256)
    with pytest.raises(InvalidPackage, match="missing"):
        await store.get(package.sha256)


class MemoryBlobs:
    """The shared blob store of several nodes, in memory."""

    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    async def save(self, sha256: str, data: bytes) -> None:
        self.blobs[sha256] = data

    async def load(self, sha256: str) -> bytes | None:
        return self.blobs.get(sha256)

    async def drop(self, sha256: str) -> None:
        self.blobs.pop(sha256, None)


async def test_concurrent_first_uses_of_a_shared_blob_all_get_it(tmp_path: Path) -> None:
    # Another node received the package; here several cold starts fetch it at the same time.
    shared = MemoryBlobs()
    data = zip_of({"main.py": "def main(e): return e", "big.bin": os.urandom(4 << 20).hex()})
    package = await PackageStore(tmp_path / "elsewhere", shared).put(data)
    here = PackageStore(tmp_path / "here", shared)
    fetched = await asyncio.gather(*(here.get(package.sha256) for _ in range(16)))
    assert all(blob == data for blob in fetched)
    files = sorted(p.name for p in (tmp_path / "here").rglob("*"))
    assert files == sorted([package.sha256[:2], f"{package.sha256}.zip"])  # no partial left
