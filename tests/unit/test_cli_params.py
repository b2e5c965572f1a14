"""What the command line and the list API take: sizes, id prefixes, settings."""

from __future__ import annotations

import random
import uuid

import click
import pytest

from spinlet.api.filters import id_prefix
from spinlet.cli.params import parse_size
from spinlet.errors import InvalidSetting, ValidationFailed
from spinlet.settings import Settings


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("134217728", 134217728),
        ("128Mi", 128 * 1024**2),
        ("128MiB", 128 * 1024**2),
        ("1Gi", 1024**3),
        ("1.5gi", 1536 * 1024**2),
        ("512M", 512 * 1000**2),
        ("64Ki", 65536),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "Mi", "12 apples", "-1Gi", "1Xi"])
def test_what_is_not_a_size_is_refused(text: str) -> None:
    with pytest.raises(click.BadParameter, match="is not a size: say 134217728, 128Mi or 1Gi"):
        parse_size(text)


def matching(prefix: str, ids: list[str]) -> list[str]:
    """The ids that the filters of `id_prefix` select (compared as the database compares text)."""
    selected = ids
    for item in id_prefix(prefix):
        if item.op == "gte":
            selected = [i for i in selected if i >= item.value]
        else:
            assert item.op == "lt"
            selected = [i for i in selected if i < item.value]
    return selected


def test_an_id_prefix_is_a_range_that_holds_exactly_the_ids_that_start_so() -> None:
    rng = random.Random(11)
    ids = sorted(str(uuid.UUID(int=rng.getrandbits(128))) for _ in range(2000))
    ids += ["38eda13e-ffff-4fff-bfff-ffffffffffff", "38eda13f-0000-4000-8000-000000000000"]
    ids += ["ffffffff-ffff-4fff-bfff-ffffffffffff"]
    prefixes = ["38eda13e", "38eda13e-f", "38eda13eff", "38eda13f", "f", "ffffffff-ffff", "0"]
    prefixes += [i[:n] for i in rng.sample(ids, 40) for n in (1, 3, 8, 9, 13, 20, 36)]
    for prefix in prefixes:
        digits = prefix.replace("-", "")
        expected = [i for i in ids if i.replace("-", "").startswith(digits)]
        assert matching(prefix, ids) == expected, prefix
        assert matching(prefix.upper(), ids) == expected, prefix


@pytest.mark.parametrize("text", ["", "xyz", "38eda13e-zz", "0" * 33])
def test_an_id_prefix_is_hexadecimal(text: str) -> None:
    with pytest.raises(ValidationFailed, match="id_prefix must be the start of an id"):
        id_prefix(text)


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("SPINLET_WORKERS", "many", "SPINLET_WORKERS must be a number, not 'many'"),
        ("SPINLET_WORKERS", "0", "SPINLET_WORKERS must be more than 0, not 0"),
        ("SPINLET_STEM_CELLS", "-1", "SPINLET_STEM_CELLS must be 0 or more, not -1"),
        ("SPINLET_LOG_LIMIT", "1MiB", "SPINLET_LOG_LIMIT must be a number, not '1MiB'"),
        ("SPINLET_MAX_RESULT_SIZE", "0", "SPINLET_MAX_RESULT_SIZE must be more than 0, not 0"),
        ("SPINLET_MAX_INPUT_SIZE", "-5", "SPINLET_MAX_INPUT_SIZE must be more than 0, not -5"),
        ("SPINLET_BACKEND", "kubernetes", "SPINLET_BACKEND must be docker or process"),
        ("SPINLET_AUTH", "maybe", "SPINLET_AUTH must be on, off or auto, not 'maybe'"),
        ("SPINLET_NODE_LEASE", "1", "SPINLET_NODE_LEASE must be longer than"),
        ("SPINLET_DATABASE_URL", "mysql://u:pw@db/x", "SPINLET_DATABASE_URL must be sqlite+"),
        ("SPINLET_DATABASE_URL", "bogus", "SPINLET_DATABASE_URL must be sqlite+aiosqlite"),
    ],
)
def test_a_bad_setting_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, message: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(InvalidSetting) as raised:
        Settings.from_env()
    assert str(raised.value).startswith(message)
    assert "pw" not in str(raised.value)


def test_good_settings_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINLET_STEM_CELLS", "0")
    monkeypatch.setenv("SPINLET_MAX_MEMORY", "1073741824")
    settings = Settings.from_env(backend="process")
    assert (settings.stem_cells, settings.max_memory, settings.backend) == (0, 1024**3, "process")


def test_the_input_result_and_log_caps_are_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("SPINLET_MAX_INPUT_SIZE", "SPINLET_MAX_RESULT_SIZE", "SPINLET_LOG_LIMIT"):
        monkeypatch.delenv(name, raising=False)
    defaults = Settings.from_env()
    assert (defaults.max_input_size, defaults.max_result_size, defaults.log_limit) == (
        1024 * 1024,
        1024 * 1024,
        1024 * 1024,
    )
    monkeypatch.setenv("SPINLET_MAX_INPUT_SIZE", "6000000")  # Lambda's sync payload
    monkeypatch.setenv("SPINLET_MAX_RESULT_SIZE", "6000000")
    monkeypatch.setenv("SPINLET_LOG_LIMIT", "65536")
    settings = Settings.from_env()
    assert (settings.max_input_size, settings.max_result_size, settings.log_limit) == (
        6_000_000,
        6_000_000,
        65536,
    )


def test_the_settings_know_the_stores_url_schemes() -> None:
    from spinlet.settings import DATABASES
    from spinlet.store.database import DRIVERS

    assert sorted(DATABASES) == sorted(DRIVERS)
