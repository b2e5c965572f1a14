"""The shipped runtimes' catalogue, and how the bootstrap script picks a Debian mirror."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from spinlet.paths import deploy_dir, project_root, runtimes_dir
from spinlet.runtime.catalog import CATALOG, DEFAULT, TRIXIE, catalog, markdown_table, shipped


def test_the_shipped_runtimes() -> None:
    assert [(e.name, e.language, e.image) for e in CATALOG] == [
        ("python3", "Python 3.11", "spinlet/runtime-python3:1"),
        ("python3.13", "Python 3.13", "spinlet/runtime-python3.13:1"),
        ("nodejs20", "Node.js 20", "spinlet/runtime-nodejs20:1"),
    ]
    assert DEFAULT is CATALOG[0] and DEFAULT.public_base == "python:3.11-slim-bookworm"
    assert DEFAULT.offline_base.tag == "spinlet/base-python:bookworm"
    python313, nodejs20 = shipped("python3.13"), shipped("nodejs20")
    assert python313 is not None and nodejs20 is not None
    assert (python313.public_base, python313.context) == ("python:3.13-slim-trixie", "python")
    assert (nodejs20.public_base, nodejs20.context) == ("node:20-bookworm-slim", "nodejs")
    # One trixie base serves both.
    assert python313.offline_base == nodejs20.offline_base == TRIXIE
    assert TRIXIE.tag == "spinlet/base:trixie" and set(TRIXIE.packages) == {"python3", "nodejs"}
    assert shipped("python2") is None
    assert (runtimes_dir() / DEFAULT.context / "Dockerfile").is_file()


def test_a_node_may_tag_the_default_runtime_otherwise() -> None:
    entries = catalog("example/runtime:7")
    assert [e.image for e in entries] == [
        "example/runtime:7",
        "spinlet/runtime-python3.13:1",
        "spinlet/runtime-nodejs20:1",
    ]
    assert catalog() == CATALOG


def test_the_readme_table_names_each_runtime_and_how_to_bring_dependencies() -> None:
    table = markdown_table().splitlines()
    assert table[0] == "| Runtime | Language | Handler | Dependencies |"
    assert len(table) == 2 + len(CATALOG)
    assert "`nodejs20` | Node.js 20 | `module.exports.main" in table[4]
    assert "node_modules/" in table[4] and "requirements.txt" in table[3]


def test_the_readme_shows_the_catalogue() -> None:
    readme = (project_root() / "README.md").read_text()
    assert markdown_table() in readme


# --- the bootstrap script's choice of mirror ---------------------------------------------------

DEB822 = """\
Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""


def mirror_for(apt_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(deploy_dir() / "bootstrap-base-image.sh"), *args, "--print-mirror"],
        env={"PATH": "/usr/bin:/bin", "SPINLET_APT_DIR": str(apt_dir)},
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.fixture
def apt_dir(tmp_path: Path) -> Path:
    (tmp_path / "sources.list.d").mkdir()
    return tmp_path


def test_a_suite_the_apt_config_lists_takes_its_own_stanza(apt_dir: Path) -> None:
    (apt_dir / "sources.list.d" / "debian.sources").write_text(DEB822)
    assert mirror_for(apt_dir).stdout == "http://mirror.example/debian\n"
    security = mirror_for(apt_dir, "--suite", "bookworm-security").stdout
    assert security == "http://mirror.example/debian-security\n"


def test_another_suite_takes_the_main_archive_not_security(apt_dir: Path) -> None:
    # The security stanza first: still the main archive is chosen for trixie.
    stanzas = DEB822.split("\n\n")
    (apt_dir / "sources.list.d" / "debian.sources").write_text("\n\n".join(stanzas[::-1]))
    done = mirror_for(apt_dir, "--suite", "trixie", "--include", "python3,nodejs")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "http://mirror.example/debian\n"


def test_the_classic_sources_list_too(apt_dir: Path) -> None:
    (apt_dir / "sources.list").write_text(
        "deb http://mirror.example/debian-security bookworm-security main\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"
    )
    assert mirror_for(apt_dir, "--suite", "trixie").stdout == "http://mirror.example/debian\n"
    assert mirror_for(apt_dir).stdout == "http://mirror.example/debian\n"


def test_no_mirror_at_all_says_how_to_give_one(apt_dir: Path) -> None:
    done = mirror_for(apt_dir, "--suite", "trixie")
    assert done.returncode == 1
    assert "pass --mirror URL" in done.stderr
    given = mirror_for(apt_dir, "--suite", "trixie", "--mirror", "http://m.example/d")
    assert given.stdout == "http://m.example/d\n"
