"""Code directories: each sandbox's own directory of its function's code, filled by the node.

A sandbox gets an empty directory of its own when it is created (a stem cell too: it is made
before its function is known), which the Docker driver bind-mounts read-only at `MOUNT_POINT`.
At `/init` the node fills `code/` in it with the function version's code, extracted on the host:
no code in the container's memory-counted `/tmp`, no writable exec mount, and compiled modules
load. Beside `code/`, `layer/` holds the function's dependency layer when it has one.

Layout under `root` (`<data dir>/code`), one filesystem, so that hard links work:

- `extracted/<sha256 of the zip>/`: each package extracted once, into a scratch directory renamed
  into place (atomic: two inits extracting the same package at once both end with one copy);
- `layers/<layer id>/`: the node's extracted dependency layers (`layers.cache.LayerCache`, which
  owns that directory);
- `<sandbox name>/code/`: hard links to the package's files, so every sandbox of a version shares
  one copy in the page cache;
- `<sandbox name>/layer/`: hard links to its layer's files, likewise shared by every sandbox of
  every function with that layer. Linking is per file: N files cost N `link` calls (measured
  in `link_tree`), never a copy of their bytes.

An extracted package stays while the node runs (the next sandbox of its version links it at
once); those no sandbox links to are removed when the node starts and when it stops.

Every file is a regular file of mode 0644 (0755 when the zip says executable) and every directory
0755, whatever the zip claims: `zipfile` writes a symlink's target as a file and never makes device
nodes, and the modes are the node's, so nothing set-uid, set-gid or a device can appear. The
read-only bind mount therefore holds what `nosuid,nodev` would forbid by construction (Docker's
bind options, `Propagation`, `NonRecursive`, `CreateMountpoint` and the `ReadOnly*` ones, have
no `nosuid` or `nodev`; the containers' `no-new-privileges` makes set-uid bits inert anyway).
The runtime user (10001) reads everything; only the node writes.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import tempfile
import time
import zipfile
from collections.abc import Container
from pathlib import Path, PurePosixPath

from spinlet.errors import InvalidPackage, RuntimeBackendError

#: Where a Docker sandbox sees its directory, and the code in it.
MOUNT_POINT = "/var/spinlet"
CODE = "code"
LAYER = "layer"
EXTRACTED = "extracted"
#: Where `layers.cache.LayerCache` keeps the extracted layers, under the same root.
LAYERS = "layers"
#: A scratch extraction older than this is a crashed node's: removed when a node starts.
SCRATCH_MAX_AGE = 3600.0

_COPY_CHUNK = 1024 * 1024


class CodeDirs:
    """The code directories of one node's sandboxes (names matching `name_re`)."""

    def __init__(self, root: Path, name_re: re.Pattern[str]) -> None:
        self.root = Path(root)
        self._name_re = name_re

    def make(self, name: str) -> Path:
        """A new, empty directory for sandbox `name` (blocking: call it in a thread)."""
        directory = self.root / name
        directory.mkdir(parents=True)
        os.chmod(directory, 0o755)  # whatever the umask: the runtime user reads it
        return directory

    def fill(self, name: str, package: bytes, layer: Path | None = None) -> Path:
        """Put the package's files in sandbox `name`'s `code/`, and the files of the extracted
        dependency `layer` (a directory on this filesystem) in its `layer/`, replacing what was
        there; return the `code/` directory (`layer/` is beside it).

        Blocking (hashing, extracting, linking): call it in a thread. A package that is not a
        valid zip is `InvalidPackage`; a failure of the host's disk is `RuntimeBackendError`.
        """
        try:
            return self._link(name, package, layer)
        except FileNotFoundError:
            pass  # its extracted copy was pruned meanwhile (a node sharing this root): again
        try:
            return self._link(name, package, layer)
        except OSError as exc:
            raise RuntimeBackendError(f"cannot prepare the code of sandbox {name}: {exc}") from exc

    def _link(self, name: str, package: bytes, layer: Path | None) -> Path:
        source = self._extracted(package)
        code = self.root / name / CODE
        shutil.rmtree(code, ignore_errors=True)
        link_tree(source, code)
        shutil.rmtree(self.root / name / LAYER, ignore_errors=True)
        if layer is not None:
            link_tree(layer, self.root / name / LAYER)
        return code

    def remove(self, name: str) -> None:
        """Remove sandbox `name`'s directory (blocking); a missing one is not an error."""
        if self._name_re.fullmatch(name):
            shutil.rmtree(self.root / name, ignore_errors=True)

    def remove_stale(self, held: Container[str]) -> None:
        """Remove the directories of sandboxes not `held`, and extracted packages no sandbox
        links to any more (blocking: when a node starts)."""
        if not self.root.is_dir():
            return
        for directory in self.root.iterdir():
            if self._name_re.fullmatch(directory.name) and directory.name not in held:
                shutil.rmtree(directory, ignore_errors=True)
        extracted = self.root / EXTRACTED
        if not extracted.is_dir():
            return
        for entry in extracted.iterdir():
            if entry.name.startswith("."):
                if time.time() - entry.stat().st_mtime > SCRATCH_MAX_AGE:
                    shutil.rmtree(entry, ignore_errors=True)
            elif not _linked(entry):
                shutil.rmtree(entry, ignore_errors=True)

    def _extracted(self, package: bytes) -> Path:
        """The package extracted in the cache, extracting it first when it is not there."""
        target = self.root / EXTRACTED / hashlib.sha256(package).hexdigest()
        if target.is_dir():
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix=".scratch-", dir=target.parent))
        try:
            extract(package, scratch)
            try:
                os.rename(scratch, target)
            except OSError:
                if not target.is_dir():  # not "another init made it first"
                    raise
        finally:
            shutil.rmtree(scratch, ignore_errors=True)  # gone once renamed
        return target


def link_tree(source: Path, destination: Path) -> int:
    """Make `destination` a copy of the tree `source` whose files are hard links to its files
    (so no byte is copied, and the page cache is shared); return how many files it has.

    Only regular files and directories are taken (a symlink would link what it points to,
    anywhere on the host), each directory made 0755: the files keep the modes the node gave
    them. Its cost is one `link` per file, measured on ext4 (a busy 2-CPU machine) at 20-60 µs
    a file: PyYAML and orjson (39 files) 1.5-5 ms, numpy (1046 files) 20-60 ms, numpy with
    its `.pyc` files (1533) 30-50 ms; `shutil.copytree(copy_function=os.link)` took 10-30 %
    longer (it copies every directory's metadata too).
    """
    os.mkdir(destination)
    os.chmod(destination, 0o755)  # whatever the umask: the runtime user reads it
    count = 0
    with os.scandir(source) as entries:
        for entry in entries:
            target = os.path.join(destination, entry.name)
            if entry.is_dir(follow_symlinks=False):
                count += link_tree(Path(entry.path), Path(target))
            elif entry.is_file(follow_symlinks=False):
                os.link(entry.path, target, follow_symlinks=False)
                count += 1
    return count


def extract(package: bytes, directory: Path) -> None:
    """Extract the zip `package` into the empty `directory` with the node's modes only."""
    try:
        with zipfile.ZipFile(io.BytesIO(package)) as archive:
            for info in archive.infolist():
                path = directory.joinpath(*_member_parts(info.filename))
                if info.is_dir():
                    path.mkdir(parents=True, exist_ok=True)
                    continue
                path.parent.mkdir(parents=True, exist_ok=True)
                mode = 0o755 if (info.external_attr >> 16) & 0o111 else 0o644
                with archive.open(info) as source, _create(path, mode) as target:
                    shutil.copyfileobj(source, target, _COPY_CHUNK)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
        raise InvalidPackage(f"the package is not a valid zip archive: {exc}") from exc
    for parent, _, _ in os.walk(directory):
        os.chmod(parent, 0o755)


def _member_parts(name: str) -> tuple[str, ...]:
    path = PurePosixPath(name.replace("\\", "/"))
    drive = len(name) > 1 and name[0].isalpha() and name[1] == ":"
    if path.is_absolute() or ".." in path.parts or drive:
        raise InvalidPackage(f"zip entry {name!r} points outside the package")
    return tuple(part for part in path.parts if part != ".")


def _create(path: Path, mode: int) -> io.BufferedWriter:
    """A new regular file of exactly `mode` (never following a link)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, mode)
    os.fchmod(fd, mode)  # the umask may have taken bits away
    return open(fd, "wb")


def _linked(entry: Path) -> bool:
    """Whether any file of an extracted package is also linked from a sandbox's directory."""
    for parent, _, files in os.walk(entry):
        for name in files:
            if os.lstat(os.path.join(parent, name)).st_nlink > 1:
                return True
    return False
