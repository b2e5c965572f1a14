"""Function packages: validating uploads and keeping zip blobs on disk by content hash.

An upload is made ready in one step, `prepare`, that the service runs off the event loop: it
checks the md5sum the client gave, validates the package (reading every entry of a zip, up to
`max_unpacked_size`), checks that the entry module defines the entry function, zips a single
file and hashes the result once (sha256 and md5 together).

The unpacked size is judged from the sizes the zip declares, before anything is decompressed,
so a zip bomb costs nothing; the one read of every entry (`testzip`, a CRC check) then cannot
produce more than those declared sizes either (`zipfile` stops each entry at its declared size
and reports a bad CRC).
"""

from __future__ import annotations

import ast
import asyncio
import hashlib
import io
import os
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Protocol

from spinlet.domain import Package
from spinlet.entrypoints import defines
from spinlet.errors import (
    ChecksumMismatch,
    InvalidEntry,
    InvalidPackage,
    TooLarge,
    ValidationFailed,
)

MiB = 1024 * 1024
#: What a package may unpack to. The node extracts it on its own disk (`runtime/codedirs.py`),
#: not in the container's memory: it does not count against the function's memory limit.
MAX_UNPACKED_SIZE = 250 * MiB
#: A file takes whole pages (of the page cache, blocks of the disk): its size is counted
#: rounded up to one.
PAGE_SIZE = 4096
#: Hashes are fed this much at a time: both stay in the CPU's cache between the two updates.
HASH_CHUNK = 1 * MiB
ENTRY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


@dataclass(frozen=True)
class Language:
    """What a runtime's packages are written in, as far as an upload is checked: the files that
    hold its modules (a package needs one; a single uploaded file is one), the shape of an entry
    (`module.function`), and whether the node can check more (Python: the syntax, and that the
    entry's module defines its function; other languages are checked by their runtime at
    `/init`)."""

    name: str
    suffixes: tuple[str, ...]  # of its module files, the first is a single file's default
    entry: re.Pattern[str]
    described: str  # "Python (.py)"


PYTHON = Language("python", (".py",), ENTRY_RE, "Python (.py)")
#: `dir/module.function`: `dir/module.js` (or `.mjs`, `.cjs`) exporting `function`.
NODEJS = Language(
    "nodejs",
    (".js", ".mjs", ".cjs"),
    re.compile(r"^(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_./-]*\.[A-Za-z_$][A-Za-z0-9_$]*$"),
    "JavaScript (.js, .mjs, .cjs)",
)
#: A runtime someone registered: its server checks the code; here only the zip itself is.
ANY = Language("any", (), re.compile(r"^[^.\s][^\s]*\.[^.\s]+$"), "")
#: The languages of the shipped runtimes, by their build context (`runtime/catalog.py`).
LANGUAGES = {language.name: language for language in (PYTHON, NODEJS)}


@dataclass(frozen=True)
class PackageLimits:
    max_size: int = 50 * MiB  # as uploaded
    max_unpacked_size: int = MAX_UNPACKED_SIZE  # as extracted, each file in whole pages
    max_files: int = 10_000


def _zip_single_file(source: bytes, filename: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        info = zipfile.ZipInfo(filename, date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        archive.writestr(info, source)
    return buffer.getvalue()


def _check_python(source: bytes, filename: str) -> None:
    try:
        compile(source, filename, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        raise InvalidPackage(f"{filename} is not valid Python: {exc}") from exc


def _check_zip(archive: zipfile.ZipFile, limits: PackageLimits, language: Language) -> None:
    infos = archive.infolist()
    if len(infos) > limits.max_files:
        raise TooLarge(f"the package has {len(infos)} files; the limit is {limits.max_files}")
    unpacked = 0
    for info in infos:
        path = PurePosixPath(info.filename.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or re.match(r"^[A-Za-z]:", info.filename):
            raise InvalidPackage(f"the package entry {info.filename!r} leaves the package")
        unpacked += -(-info.file_size // PAGE_SIZE) * PAGE_SIZE
    if unpacked > limits.max_unpacked_size:
        raise TooLarge(
            f"the package unpacks to {unpacked} bytes (each file in whole {PAGE_SIZE}-byte "
            f"pages); the limit is {limits.max_unpacked_size} bytes "
            f"({limits.max_unpacked_size / MiB:g} MiB)"
        )
    if language.suffixes and not any(
        name.endswith(language.suffixes) for name in archive.namelist()
    ):
        raise InvalidPackage(f"the package contains no {language.described} file")
    bad = archive.testzip()
    if bad is not None:
        raise InvalidPackage(f"the package entry {bad!r} is corrupt")


def _check_size(data: bytes, limits: PackageLimits) -> None:
    if len(data) > limits.max_size:
        raise TooLarge(f"the package is {len(data)} bytes; the limit is {limits.max_size}")


def normalize(
    data: bytes, filename: str | None, limits: PackageLimits, language: Language = PYTHON
) -> tuple[bytes, str]:
    """Validate an upload; returns the zip to store and the entry module a single file gives.

    A `.zip` is checked (paths, sizes, file count, at least one module file of its language);
    a single file is zipped under its own name (a Python one checked for syntax).
    """
    _check_size(data, limits)
    if not data:
        raise InvalidPackage("the package is empty")
    if zipfile.is_zipfile(io.BytesIO(data)):
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                _check_zip(archive, limits, language)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
            raise InvalidPackage(f"the package is not a valid zip archive: {exc}") from exc
        return data, "main"
    default = f"main{language.suffixes[0] if language.suffixes else '.py'}"
    name = PurePosixPath((filename or default).replace("\\", "/")).name
    if name.endswith(".zip"):
        raise InvalidPackage(f"{name} is not a valid zip archive")
    if language.suffixes and not name.endswith(language.suffixes):
        name = default
    module = name.rsplit(".", 1)[0] if "." in name else name
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", module):
        raise InvalidPackage(f"{name!r} is not a usable module name")
    if language is PYTHON:
        _check_python(data, name)
    return _zip_single_file(data, name), module


def check_entry(data: bytes, entry: str, language: Language = PYTHON) -> None:
    """The entry's module must be in the package and, in Python, define the entry's function
    (see `entrypoints` for what counts, and what is left to the first call); a module that is
    not valid Python is an invalid package. A runtime someone registered gets its entry as
    written: its server says at `/init` whether it loads."""
    if not language.entry.match(entry):
        raise ValidationFailed(f"entry {entry!r} must look like module.function")
    if language is ANY:
        return
    module, function = entry.rsplit(".", 1)
    path = module.replace(".", "/") if language is PYTHON else module
    candidates = (
        (f"{path}.py", f"{path}/__init__.py")
        if language is PYTHON
        else tuple(path + suffix for suffix in language.suffixes)
    )
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = set(archive.namelist())
        found = next((n for n in candidates if n in names), None)
        if found is None:
            raise InvalidEntry(
                f"entry {entry!r}: module {module!r} is not in the package "
                f"(expected {candidates[0]})"
            )
        if language is not PYTHON:
            return
        source = archive.read(found)
    try:
        tree = ast.parse(source, found)
    except (SyntaxError, ValueError) as exc:
        raise InvalidPackage(f"{found} is not valid Python: {exc}") from exc
    if not defines(tree, function):
        raise InvalidEntry(f"entry {entry!r}: {found} does not define {function!r}")


def describe(data: bytes) -> Package:
    """The package's hashes (sha256 and md5, in one pass over the bytes) and size."""
    sha256, md5 = hashlib.sha256(), hashlib.md5()
    view = memoryview(data)
    for start in range(0, len(view), HASH_CHUNK):
        chunk = view[start : start + HASH_CHUNK]
        sha256.update(chunk)
        md5.update(chunk)
    return Package(sha256=sha256.hexdigest(), md5sum=md5.hexdigest(), size=len(data))


@dataclass(frozen=True)
class Prepared:
    """An upload ready to keep: the zip, its description and the entry to use."""

    data: bytes
    package: Package
    entry: str


def prepare(
    data: bytes,
    filename: str | None,
    limits: PackageLimits,
    *,
    entry: str | None = None,
    md5sum: str | None = None,
    language: Language = PYTHON,
) -> Prepared:
    """Everything an upload needs before it is kept, in one blocking step (run it off the event
    loop): the `md5sum` the client gave checked against the bytes as sent, the package
    validated (`normalize`), the entry (default `<module>.main`) checked, the zip hashed. A zip
    is kept as sent, so its bytes are hashed once whether an md5sum was given or not."""
    _check_size(data, limits)  # before anything reads it
    sent = describe(data) if md5sum else None
    if sent is not None and md5sum is not None and sent.md5sum != md5sum.lower():
        raise ChecksumMismatch(f"the package's md5sum is {sent.md5sum}, not {md5sum}")
    zipped, module = normalize(data, filename, limits, language)
    package = sent if sent is not None and zipped is data else describe(zipped)
    entry = entry or f"{module}.main"
    check_entry(zipped, entry, language)
    return Prepared(zipped, package, entry)


class SharedBlobs(Protocol):
    """Where the nodes sharing a store keep package blobs (the database)."""

    async def save(self, sha256: str, data: bytes) -> None: ...

    async def load(self, sha256: str) -> bytes | None: ...

    async def drop(self, sha256: str) -> None: ...


class PackageStore:
    """Zip blobs on disk, one file per content hash, written atomically.

    With `shared` (several nodes on one database), the blobs live there too and the files are
    this node's cache: a blob another node received is fetched on first use.
    """

    def __init__(self, root: Path, shared: SharedBlobs | None = None) -> None:
        self.root = root
        self.shared = shared

    def _path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / f"{sha256}.zip"

    def _write(self, sha256: str, data: bytes) -> None:
        path = self._path(sha256)
        if path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        # A name of its own: cold starts fetching the same blob write it at the same time.
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=f"{sha256}.", suffix=".part", delete=False
        ) as handle:
            try:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            except BaseException:
                os.unlink(handle.name)
                raise
        os.replace(handle.name, path)

    async def put(self, data: bytes, package: Package | None = None) -> Package:
        """Keep `data`, described by `package` (`describe`d here, off the loop, without)."""
        if package is None:
            package = await asyncio.to_thread(describe, data)
        if self.shared is not None:
            await self.shared.save(package.sha256, data)
        await asyncio.to_thread(self._write, package.sha256, data)
        return package

    async def get(self, sha256: str) -> bytes:
        try:
            return await asyncio.to_thread(self._path(sha256).read_bytes)
        except FileNotFoundError as exc:
            data = await self.shared.load(sha256) if self.shared is not None else None
            if data is None:
                raise InvalidPackage(f"package {sha256} is missing from the package store") from exc
        await asyncio.to_thread(self._write, sha256, data)
        return data

    async def delete(self, sha256: str) -> None:
        await asyncio.to_thread(self._path(sha256).unlink, missing_ok=True)
        if self.shared is not None:
            await self.shared.drop(sha256)
