"""Package validation: what uploads are accepted, and the clear errors for the rest."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import zipfile
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from spinlet import packages
from spinlet.api.app import create_app
from spinlet.domain import Package
from spinlet.errors import (
    ChecksumMismatch,
    InvalidEntry,
    InvalidPackage,
    TooLarge,
    ValidationFailed,
)
from spinlet.packages import (
    ANY,
    MAX_UNPACKED_SIZE,
    NODEJS,
    PAGE_SIZE,
    PackageLimits,
    PackageStore,
    check_entry,
    describe,
    normalize,
    prepare,
)
from spinlet.settings import Settings

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
    with pytest.raises(InvalidEntry, match="module 'handler' is not in the package"):
        check_entry(stored, "handler.main")
    with pytest.raises(InvalidEntry, match=r"main\.py does not define 'handler'"):
        check_entry(stored, "main.handler")
    with pytest.raises(ValidationFailed, match=r"module\.function"):
        check_entry(stored, "main")


def test_package_module_entry() -> None:
    data = zip_of({"app/__init__.py": "", "app/handlers.py": "def main(e): return e"})
    check_entry(data, "app.handlers.main")
    with pytest.raises(InvalidEntry, match=r"app/__init__\.py does not define 'main'"):
        check_entry(data, "app.main")
    with pytest.raises(InvalidEntry, match=r"module 'app\.other'"):
        check_entry(data, "app.other.main")


def test_an_entry_module_that_is_not_python_is_an_invalid_package() -> None:
    data = zip_of({"main.py": "def main(e):\n  return (e\n"})
    with pytest.raises(InvalidPackage, match=r"main\.py is not valid Python"):
        check_entry(data, "main.main")


def test_the_unpacked_limit_counts_whole_pages_and_is_the_sandbox_tmp() -> None:
    limits = PackageLimits(max_unpacked_size=4 * PAGE_SIZE)
    files: dict[str, bytes | str] = {"main.py": "def main(e): return e"}
    files.update({f"f{i}.txt": b"x" for i in range(3)})  # 4 files of a page each: fits
    normalize(zip_of(files), "code.zip", limits)
    files["f3.txt"] = b"x"
    with pytest.raises(TooLarge, match="unpacks to 20480 bytes"):
        normalize(zip_of(files), "code.zip", limits)
    assert PackageLimits().max_unpacked_size == MAX_UNPACKED_SIZE == 250 * 1024 * 1024


def test_a_zip_that_understates_its_sizes_is_refused_without_unpacking_more() -> None:
    """Sizes are judged from the zip's directory; the one read of every entry stops at the
    declared size, so a zip that lies about it is corrupt, not a bomb."""
    data = bytearray(zip_of({"main.py": "def main(e): return e", "z.bin": b"\0" * (8 << 20)}))
    declared = (8 << 20).to_bytes(4, "little")
    assert data.count(declared) == 2  # the local header and the central directory
    data = bytes(data).replace(declared, (1024).to_bytes(4, "little"))
    with pytest.raises(InvalidPackage, match=r"'z\.bin' is corrupt"):
        normalize(data, "code.zip", LIMITS)


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


def test_a_zip_is_prepared_with_one_pass_of_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    data = zip_of({"app.py": "def main(e): return e", "noise.bin": os.urandom(512 << 10)})
    passes: list[int] = []
    real = packages.describe
    monkeypatch.setattr(packages, "describe", lambda d: passes.append(len(d)) or real(d))
    md5 = hashlib.md5(data).hexdigest()
    ready = prepare(data, "code.zip", LIMITS, entry="app.main", md5sum=md5.upper())
    assert passes == [len(data)]
    assert (ready.data, ready.entry) == (data, "app.main")
    assert ready.package == Package(hashlib.sha256(data).hexdigest(), md5, len(data))


def test_a_single_file_is_checked_as_sent_and_described_as_zipped() -> None:
    source = b"def main(e):\n    return e\n"
    ready = prepare(source, "hello.py", LIMITS, md5sum=hashlib.md5(source).hexdigest())
    assert ready.entry == "hello.main"
    assert ready.package == describe(ready.data) and ready.data != source
    with pytest.raises(ChecksumMismatch, match=f"md5sum is {hashlib.md5(source).hexdigest()}"):
        prepare(source, "hello.py", LIMITS, md5sum="0" * 32)
    with pytest.raises(InvalidEntry, match="module 'other'"):
        prepare(source, "hello.py", LIMITS, entry="other.main")
    with pytest.raises(InvalidEntry, match=r"hello\.py does not define 'handler'"):
        prepare(source, "hello.py", LIMITS, entry="hello.handler")


def _on_a_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


async def test_an_upload_is_read_and_hashed_off_the_event_loop(
    aiohttp_client: Callable[..., Coroutine[Any, Any, TestClient[Any, Any]]],
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    on_loop: list[bool] = []
    real = zipfile.ZipFile.testzip

    def testzip(archive: zipfile.ZipFile) -> str | None:  # reads every entry: 64 MiB at most
        on_loop.append(_on_a_loop())
        return real(archive)

    monkeypatch.setattr(zipfile.ZipFile, "testzip", testzip)
    api = await aiohttp_client(create_app(settings.evolve(backend="process")))
    upload = aiohttp.FormData({"name": "echo"})
    upload.add_field("package", zip_of({"main.py": "def main(e): return e"}), filename="a.zip")
    response = await api.post("/v1/functions", data=upload)
    assert response.status == 201, await response.text()
    assert on_loop == [False]


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


def test_a_nodejs_package_needs_a_javascript_module_and_its_entry_names_one() -> None:
    stored, module = normalize(
        zip_of({"lib/handler.mjs": "export const main = () => 1;\n"}), "f.zip", LIMITS, NODEJS
    )
    assert module == "main"
    check_entry(stored, "lib/handler.main", NODEJS)  # a file of the package, its export unread
    with pytest.raises(InvalidEntry, match=r"expected main\.js"):
        check_entry(stored, "main.main", NODEJS)
    with pytest.raises(ValidationFailed, match=r"module\.function"):
        check_entry(stored, "../up.main", NODEJS)
    with pytest.raises(InvalidPackage, match=r"no JavaScript \(\.js, \.mjs, \.cjs\) file"):
        normalize(zip_of({"main.py": "def main(e): pass\n"}), "f.zip", LIMITS, NODEJS)
    single, module = normalize(b"module.exports.main = e => e;\n", "hello.js", LIMITS, NODEJS)
    assert module == "hello"
    assert zipfile.ZipFile(io.BytesIO(single)).namelist() == ["hello.js"]


def test_a_package_for_a_registered_image_is_checked_as_a_zip_only() -> None:
    stored, _ = normalize(zip_of({"handler.rb": "def main(e) e end\n"}), "f.zip", LIMITS, ANY)
    check_entry(stored, "handler.main", ANY)  # its own server says at /init whether it loads
    with pytest.raises(ValidationFailed, match=r"module\.function"):
        check_entry(stored, "main", ANY)
    with pytest.raises(InvalidPackage, match="leaves the package"):
        normalize(zip_of({"../evil.rb": "x"}), "f.zip", LIMITS, ANY)
