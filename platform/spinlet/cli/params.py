"""What the options take: an execution's input, sizes such as `128Mi`, environment variables."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click

INPUT_HELP = (
    "The input, as JSON; @FILE reads it from a file and - from stdin (large inputs too). "
    "Invalid JSON is refused: give --raw to send the text as a plain string."
)
RAW_HELP = "Send --input as a plain string instead of parsing it as JSON."


def read_input(text: str | None, raw: bool) -> Any:
    """The execution's input from `--input` (and `--raw`); None when not given."""
    if text is None:
        return None
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise click.BadParameter(
                f"cannot read {text[1:]!r}: {exc.strerror}", param_hint="--input"
            ) from None
    if raw:
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno}); "
            "give --raw to send it as a plain string",
            param_hint="--input",
        ) from None


SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:([KMGT])(i)?)?B?\s*", re.IGNORECASE)
POWERS = {"k": 1, "m": 2, "g": 3, "t": 4}


def parse_size(text: str) -> int:
    """A number of bytes: `134217728`, `128Mi`, `1Gi`, `1.5Gi`, `512M` (M: 10**6, Mi: 2**20)."""
    match = SIZE.fullmatch(text)
    if not match:
        raise click.BadParameter(f"{text!r} is not a size: say 134217728, 128Mi or 1Gi")
    number, unit, binary = match.groups()
    power = POWERS[unit.lower()] if unit else 0
    return int(float(number) * (1024 if binary else 1000) ** power)


def size(ctx: click.Context, param: click.Parameter, text: str | None) -> int | None:
    """An option's size (None: not given)."""
    return None if text is None else parse_size(text)


def environment(pairs: tuple[str, ...], option: str) -> dict[str, str]:
    """`KEY=VALUE` pairs as a dict."""
    variables: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=option)
        variables[key] = value
    return variables


def environment_json(ctx: click.Context, param: click.Parameter, pairs: tuple[str, ...]) -> Any:
    """`--env`/`--env-add KEY=VALUE …` as the JSON object the API takes (None: not given)."""
    if not pairs:
        return None
    return json.dumps(environment(pairs, param.opts[0]))


def names_json(ctx: click.Context, param: click.Parameter, names: tuple[str, ...]) -> Any:
    """`--env-rm KEY …` as the JSON list the API takes (None: not given)."""
    return json.dumps(list(names)) if names else None
