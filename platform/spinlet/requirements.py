"""A function's requirements: only named requirements (PEP 508) with `--hash` options.

A requirements file is pip's own little language: options (`-r other.txt`, `-e ./lib`,
`--index-url http://10.0.0.1/`, `-f /srv`), URL and path requirements, `${VARIABLES}` of pip's
environment. Any of those would let a tenant point the node's pip at a file or an address of the
node's network, or read its environment, so a line is accepted only when `packaging` parses it as
a named requirement (names, extras, version specifiers, markers) with nothing after it but
`--hash=algo:hex` options. What pip then reads is the normalised text written here, never the
tenant's.
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement

from spinlet.errors import InvalidPackage, InvalidRequirements

#: A requirements text may be this long (in UTF-8) ...
MAX_TEXT_SIZE = 64 * 1024
#: ... and name this many requirements.
MAX_REQUIREMENTS = 1000
#: The file a package may carry at its root.
FILENAME = "requirements.txt"
#: pip's comment rule: a `#` at the start of a line or after whitespace.
_COMMENT_RE = re.compile(r"(^|\s+)#.*$")
#: The `--hash` options after a requirement (pip accepts `--hash=x` and `--hash x`).
_HASHES_RE = re.compile(r"(?:\s+--hash(?:=|\s+)\S+)+\s*$")
_HASH_RE = re.compile(r"--hash(?:=|\s+)(\S+)")
#: The hashes pip accepts in hash-checking mode, and what their hex digests look like.
_HASH_VALUE_RE = re.compile(r"^(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})$")
#: A name ending like this is taken by pip for a file to install (its `ARCHIVE_EXTENSIONS`).
_ARCHIVE_SUFFIXES = (
    *(".whl", ".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz"),
    *(".tlz", ".tar.lz", ".tar.lzma"),
)
#: How much of a refused line a message quotes.
_QUOTED = 200

NAMED_ONLY = "only named requirements (PEP 508) are accepted"


@dataclass(frozen=True)
class Requirements:
    """Normalised requirement lines, in the order given: what pip reads."""

    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def hashed(self) -> bool:
        """Whether any line pins hashes (pip then requires them on every line)."""
        return any(" --hash=" in line for line in self.lines)


def parse(text: str, *, source: str = "requirements") -> Requirements:
    """The requirements of `text`; `InvalidRequirements` naming the first refused line."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_SIZE:
        raise InvalidRequirements(f"{source} is larger than {MAX_TEXT_SIZE // 1024} KiB")
    lines: list[str] = []
    for number, line in _logical_lines(text):
        try:
            lines.append(_normalised(line))
        except _Refused as refused:
            quoted = line if len(line) <= _QUOTED else line[:_QUOTED] + "…"
            raise InvalidRequirements(f'{source} line {number}: "{quoted}": {refused}') from None
        if len(lines) > MAX_REQUIREMENTS:
            raise InvalidRequirements(f"{source} names more than {MAX_REQUIREMENTS} requirements")
    return Requirements(tuple(lines))


def from_package(package: bytes) -> str | None:
    """The text of `requirements.txt` at the root of a package (a zip), None when it has none."""
    try:
        with zipfile.ZipFile(io.BytesIO(package)) as archive:
            try:
                info = archive.getinfo(FILENAME)
            except KeyError:
                return None
            if info.file_size > MAX_TEXT_SIZE:
                raise InvalidRequirements(f"{FILENAME} is larger than {MAX_TEXT_SIZE // 1024} KiB")
            data = archive.read(info)
    except zipfile.BadZipFile as exc:
        raise InvalidPackage(f"the package is not a valid zip archive: {exc}") from exc
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidRequirements(f"{FILENAME} is not UTF-8 text: {exc}") from exc


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(number of its first physical line, text) of each line with content, as pip reads them:
    `\\` continuations joined, then comments and blank lines dropped."""
    joined: list[tuple[int, str]] = []
    start, parts = 0, list[str]()
    for number, physical in enumerate(text.splitlines(), start=1):
        if not parts:
            start = number
        if physical.endswith("\\") and not _COMMENT_RE.match(physical):
            parts.append(physical[:-1])
            continue
        parts.append(physical)
        joined.append((start, "".join(parts)))
        parts = []
    if parts:
        joined.append((start, "".join(parts)))
    stripped = ((number, _COMMENT_RE.sub("", line).strip()) for number, line in joined)
    return [(number, line) for number, line in stripped if line]


class _Refused(Exception):
    """Why a line is refused (`parse` adds where)."""


def _normalised(line: str) -> str:
    """The line as pip will read it: `str(Requirement)` and its `--hash` options."""
    if line.startswith("-"):
        raise _Refused(f"options are not accepted: {NAMED_ONLY}")
    if "${" in line:
        raise _Refused(f"environment variables are not accepted: {NAMED_ONLY}")
    options = _HASHES_RE.search(line)
    requirement_text = line[: options.start()] if options else line
    hashes = _HASH_RE.findall(options.group()) if options else []
    try:
        requirement = Requirement(requirement_text)
    except InvalidRequirement:
        raise _Refused(NAMED_ONLY) from None
    if requirement.url:
        raise _Refused(f"URL requirements are not accepted: {NAMED_ONLY}")
    if requirement.name.lower().endswith(_ARCHIVE_SUFFIXES):
        raise _Refused(f"file names are not accepted: {NAMED_ONLY}")
    for value in hashes:
        if not _HASH_VALUE_RE.match(value):
            raise _Refused("a --hash must be sha256:, sha384: or sha512: and a hex digest")
    return " ".join([str(requirement), *(f"--hash={value}" for value in hashes)])
