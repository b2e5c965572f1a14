"""The runtime conformance suite: does an image run Spinlet's functions as the node expects?

`check_image(driver, image)` starts the image in one sandbox of `driver`, made as every sandbox
of that driver is (for Docker: the hardened container functions run in, see
`docker_driver.py`), and talks to its server as the node does (`protocol.py`), through the
probe function of the image's language (`probes.py`). Each check has a name, passes or fails,
and says why in one line:

- `health`: a server answers `GET /health` on the socket in time, speaking a protocol version
  this node speaks; else why not: nothing answers on the socket, the container exits at once
  (its exit status and last lines of output), or another protocol version;
- `init`: `/init` loads the probe function (the version agreed is one this node speaks);
- `run`: `/run` returns the function's result, a JSON value, intact;
- `error`: an exception comes back as `{type, message, traceback}`;
- `log capture`: output is captured at the file-descriptor level: what the language prints,
  what is written to fd 1 directly and by a child process, and stderr, are all in the log;
- `result too large`: a result over the node's limit (1 MiB by default) comes back whole, for
  the node to refuse (`result_too_large`), and the runtime goes on answering;
- `timeout`: a busy run does not answer before its deadline; past it the node destroys the
  container, as it does for a function (the outcome is a `timeout`).

The checks run in that order in the one sandbox (the last destroys it). One that cannot run
because an earlier one failed (no server, no function loaded, a runtime that stopped answering)
fails saying so. `QUICK` is what registering an image runs (`RuntimeService`).
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from spinlet.errors import ImageMissing, RuntimeBackendError, RuntimeProtocolMismatch
from spinlet.runtime.driver import (
    RUNTIME_LABEL,
    SOCKET_DIR,
    SOCKET_NAME,
    Driver,
    Ending,
    Sandbox,
    SandboxShape,
)
from spinlet.runtime.probes import ENTRY, language_of, probe_package
from spinlet.runtime.protocol import (
    CODE_DIR_FEATURE,
    MAX_PROTOCOL,
    PROTOCOL_VERSION,
    ContainerGone,
    RuntimeConnection,
)

__all__ = ["CHECKS", "QUICK", "CheckResult", "Report", "check_image"]

MiB = 1024 * 1024

CHECKS = ("health", "init", "run", "error", "log capture", "result too large", "timeout")
#: What registering an image checks: that it is a runtime of this node's protocol at all.
QUICK = CHECKS[:3]
#: What every other check needs: run whatever is asked.
ALWAYS = CHECKS[:2]

#: How long the server may take to answer its first `/health`.
READY_TIMEOUT = 20.0
#: How long `/init` and each probe's `/run` may take (the busy one aside).
CALL_TIMEOUT = 20.0
#: The busy run's deadline.
SPIN_TIMEOUT = 1.0
#: The size of the result that is too large (twice the node's default limit).
LARGE_RESULT = 2 * MiB
#: The sandbox: as a function's of the default limits.
MEMORY_SIZE = 128 * MiB
CPU = 1000
LOG_LIMIT = 1 * MiB
#: Output lines shown of a runtime that exits at once.
OUTPUT_LINES = 5
#: The language probed when neither the image nor the server says one.
DEFAULT_LANGUAGE = "python"
#: A JSON value to echo: strings (beyond ASCII), numbers, nesting, null and booleans.
ECHO: dict[str, Any] = {
    "text": "héllo, wörld ✓",
    "number": 42,
    "float": 2.5,
    "list": [1, None, True, False, "two"],
    "nested": {"empty": "", "deep": {"a": [{}]}},
}


@dataclass(frozen=True)
class CheckResult:
    name: str
    passed: bool
    reason: str  # one line


@dataclass(frozen=True)
class Report:
    image: str
    image_id: str
    language: str
    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return all(result.passed for result in self.results)

    def failures(self) -> list[CheckResult]:
        return [result for result in self.results if not result.passed]

    def summary(self) -> str:
        """What failed, each check's reason, in one line ("" when all passed)."""
        return "; ".join(f"{result.name}: {result.reason}" for result in self.failures())


class _Failed(Exception):
    """A check failed: the message says why."""


class _Broken(_Failed):
    """A check failed in a way that leaves nothing to check further in this sandbox."""


class _Unanswered(_Broken):
    """No answer came by the deadline."""


async def check_image(
    driver: Driver,
    image: str,
    *,
    checks: Sequence[str] = CHECKS,
    language: str | None = None,
    ready_timeout: float = READY_TIMEOUT,
) -> Report:
    """Run `checks` (from `CHECKS`, in its order whatever theirs; `health` and `init` always, as
    every other check needs them) against `image` in one sandbox of `driver`. The probe is
    written in `language`, else the one the image's `spinlet.runtime` label says, else the one
    its `/health` says (`language` or `runtime`), else Python.

    Raises `ImageMissing` when the image is not here, `RuntimeBackendError` when the driver
    fails (the engine); everything the image does is a check's result."""
    unknown = set(checks) - set(CHECKS)
    if unknown:
        raise ValueError(f"unknown checks {sorted(unknown)}; choose from {', '.join(CHECKS)}")
    image_id = await driver.image_id(image)
    if image_id is None:
        raise ImageMissing(f"image {image!r} is not present on this node", image=image)
    labels = await driver.image_labels(image)
    language = language or language_of(labels.get(RUNTIME_LABEL))
    suite = _Suite(driver, image_id, language, ready_timeout)
    names = [name for name in CHECKS if name in ALWAYS or name in checks]
    results = await suite.run(names)
    return Report(image, image_id, suite.language or DEFAULT_LANGUAGE, tuple(results))


class _Suite:
    """The checks of one image, in one sandbox."""

    def __init__(
        self, driver: Driver, image_id: str, language: str | None, ready_timeout: float
    ) -> None:
        self.driver = driver
        self.image_id = image_id
        self.language = language
        self.sandbox: Sandbox | None = None
        self.conn: RuntimeConnection | None = None
        self.ready_timeout = ready_timeout
        self.broken: str | None = None  # why nothing more can be checked

    async def run(self, names: list[str]) -> list[CheckResult]:
        steps: dict[str, Callable[[], Awaitable[str]]] = {
            "health": self.health,
            "init": self.init,
            "run": self.echo,
            "error": self.error,
            "log capture": self.log_capture,
            "result too large": self.large_result,
            "timeout": self.timeout,
        }
        results = []
        try:
            for name in names:
                results.append(await self._step(name, steps[name]))
        finally:
            await self._destroy()
        return results

    async def _step(self, name: str, step: Callable[[], Awaitable[str]]) -> CheckResult:
        if self.broken is not None:
            return CheckResult(name, False, f"not run: {self.broken}")
        try:
            return CheckResult(name, True, await step())
        except _Broken as exc:
            self.broken = f"{name} failed"
            return CheckResult(name, False, str(exc))
        except _Failed as exc:
            return CheckResult(name, False, str(exc))

    # -- the sandbox -----------------------------------------------------------------------

    async def _destroy(self) -> None:
        sandbox, conn = self.sandbox, self.conn
        self.sandbox = self.conn = None
        if conn is not None:
            await conn.close()
        if sandbox is not None:
            await self.driver.destroy(sandbox)

    def _parts(self) -> tuple[Sandbox, RuntimeConnection]:
        if self.sandbox is None or self.conn is None:
            raise _Broken("no runtime to check")
        return self.sandbox, self.conn

    async def _gone(self, during: str) -> _Broken:
        """Why the server stopped answering `during` a request."""
        sandbox, _ = self._parts()
        ending = await self.driver.ending(sandbox, OUTPUT_LINES)
        if ending is None:
            return _Broken(f"the runtime closed the connection during {during}")
        return _Broken(f"the runtime exited during {during}{_said(ending)}")

    # -- the checks ------------------------------------------------------------------------

    async def health(self) -> str:
        capacity = await self.driver.capacity()
        shape = SandboxShape(self.image_id, MEMORY_SIZE, min(CPU, capacity.cpu))
        started = time.monotonic()
        try:
            self.sandbox = await self.driver.create(shape, keep_output=True)
        except RuntimeBackendError as exc:
            raise _Broken(f"the container cannot start: {exc.message}") from exc
        sandbox = self.sandbox
        self.conn = conn = RuntimeConnection(sandbox.socket_path)

        async def exited() -> bool:
            return await self.driver.inspect_exit(sandbox) is not None

        try:
            reply = await conn.wait_ready(self.ready_timeout, exited=exited)
        except ContainerGone as exc:
            ending = await self.driver.ending(sandbox, OUTPUT_LINES)
            if ending is None:
                raise _Broken(
                    "no server on the socket: nothing answered GET /health on $SPINLET_SOCKET "
                    f"({SOCKET_DIR}/{SOCKET_NAME} in a container) within "
                    f"{self.ready_timeout:g} s"
                ) from exc
            took = time.monotonic() - started
            raise _Broken(f"the runtime exits at once, after {took:.1f} s{_said(ending)}") from exc
        except RuntimeBackendError as exc:
            raise _Broken(f"GET /health: {exc.message}") from exc
        await self.driver.seal(sandbox)
        spoken, protocols = reply.get("protocol"), reply.get("protocols")
        if not _speaks(spoken, protocols):
            said = f"protocol {spoken!r}" if protocols is None else f"protocols {protocols!r}"
            raise _Broken(
                f"wrong protocol version: /health says {said}, this node speaks {_versions()}"
            )
        if self.language is None:
            self.language = language_of(reply.get("language")) or language_of(reply.get("runtime"))
        features = reply.get("features")
        offered = ", ".join(str(f) for f in features) if isinstance(features, list) else "none"
        return f"answers /health: protocol {spoken}, features: {offered}"

    async def init(self) -> str:
        sandbox, conn = self._parts()
        language = self.language or DEFAULT_LANGUAGE
        package = probe_package(language)
        code: bytes | str = package
        if CODE_DIR_FEATURE in conn.features:
            code = (await self.driver.fill_code(sandbox, package)).code
        try:
            async with asyncio.timeout(CALL_TIMEOUT):
                reply = await conn.init(code, ENTRY, {}, LOG_LIMIT)
        except TimeoutError as exc:
            raise _Broken(f"no answer to /init within {CALL_TIMEOUT:g} s") from exc
        except RuntimeProtocolMismatch as exc:
            raise _Broken(
                f"wrong protocol version: /init agreed protocol {exc.details['protocol']!r}, "
                f"this node speaks {_versions()}"
            ) from exc
        except ContainerGone as exc:
            raise await self._gone("/init") from exc
        except RuntimeBackendError as exc:
            raise _Broken(f"/init: {exc.message}") from exc
        if reply.error is not None:
            raise _Broken(
                f"the {language} probe function did not load: "
                f"{reply.error.get('type')}: {_line(reply.error.get('message'))}"
            )
        how = "the package's directory" if isinstance(code, str) else "the zip"
        return f"loads a {language} function from {how} (protocol {reply.protocol} agreed)"

    async def echo(self) -> str:
        reply, _ = await self._run({"action": "echo", "value": ECHO})
        result = self._result(reply)
        if result != ECHO:
            raise _Failed(f"returned {_line(repr(result))}, not the value it was given")
        return "returns its result, a JSON value, intact"

    async def error(self) -> str:
        message = f"probe error {secrets.token_hex(4)}"
        reply, _ = await self._run({"action": "raise", "message": message})
        error = reply.get("error")
        if not isinstance(error, dict):
            raise _Failed(f"no error in the reply to a run that raised: {_keys(reply)}")
        fields = {key: error.get(key) for key in ("type", "message", "traceback")}
        wrong = [key for key, value in fields.items() if not isinstance(value, str)]
        if wrong:
            raise _Failed(f"the error's {', '.join(wrong)} missing or not strings: {_keys(error)}")
        if not fields["type"] or message not in str(fields["message"]):
            raise _Failed(f"the error says {fields['type']!r}: {_line(fields['message'])}")
        if not fields["traceback"]:
            raise _Failed("the error's traceback is empty")
        return f"an exception comes back as {{type, message, traceback}} ({fields['type']})"

    async def log_capture(self) -> str:
        token = secrets.token_hex(4)
        wrote = {
            "what the function printed": f"probe-{token}-own",
            "a write to fd 1": f"probe-{token}-fd1",
            "a child process's write to fd 1": f"probe-{token}-child",
            "a write to stderr": f"probe-{token}-stderr",
        }
        reply, logs = await self._run({"action": "log", "markers": list(wrote.values())})
        self._result(reply)
        missing = [what for what, marker in wrote.items() if marker not in logs]
        if missing:
            raise _Failed(f"missing from the log: {', '.join(missing)}")
        return "printing, fd 1 (its own and a child's) and stderr are all in the log"

    async def large_result(self) -> str:
        reply, _ = await self._run({"action": "large", "size": LARGE_RESULT})
        result = self._result(reply)
        if result != "x" * LARGE_RESULT:
            size = len(result) if isinstance(result, str) else type(result).__name__
            raise _Failed(f"a {LARGE_RESULT // MiB} MiB result came back as {size}")
        again, _ = await self._run({"action": "echo", "value": "again"})
        if self._result(again) != "again":
            raise _Failed("the run after a large result did not return its own result")
        return (
            f"a {LARGE_RESULT // MiB} MiB result comes back whole (the node records "
            "result_too_large) and the runtime answers the next run"
        )

    async def timeout(self) -> str:
        sandbox, _ = self._parts()
        try:
            reply, _ = await self._run({"action": "spin"}, within=SPIN_TIMEOUT)
        except _Unanswered:
            pass  # as it should be
        else:
            raise _Failed(
                f"/run answered before its deadline ({_keys(reply)}): a busy run must go on "
                "until the node destroys its container"
            )
        await self._destroy()  # as the node does at a deadline
        if await self.driver.inspect_exit(sandbox) is None:
            raise _Failed("the container still runs after the node destroyed it")
        return (
            f"still busy at its {SPIN_TIMEOUT:g} s deadline: the node destroyed the container "
            "(outcome: timeout)"
        )

    # -- runs ------------------------------------------------------------------------------

    async def _run(
        self, event: dict[str, Any], within: float = CALL_TIMEOUT
    ) -> tuple[dict[str, Any], str]:
        """The reply to `/run` with `event` (a deadline `within` seconds), and the log
        (streamed or in the reply); `_Unanswered` when no reply came by the deadline."""
        _, conn = self._parts()
        logs: list[str] = []
        payload = {
            "input": event,
            "execution_id": f"check-{secrets.token_hex(8)}",
            "deadline": time.time() + within,
            "function_id": "conformance-probe",
            "function_name": "conformance-probe",
            "function_version": 0,
        }
        try:
            async with asyncio.timeout(within):
                reply = await conn.run(payload, lambda stream, text, at: logs.append(text))
        except TimeoutError as exc:
            raise _Unanswered(f"no answer to /run within {within:g} s") from exc
        except ContainerGone as exc:
            raise await self._gone("/run") from exc
        except RuntimeBackendError as exc:
            raise _Broken(f"/run: {exc.message}") from exc
        whole = reply.get("logs")
        if isinstance(whole, str):
            logs.append(whole)
        return reply, "".join(logs)

    @staticmethod
    def _result(reply: dict[str, Any]) -> Any:
        """The reply's result; a failure when the probe raised instead."""
        if "error" in reply:
            error = reply["error"] if isinstance(reply["error"], dict) else {}
            raise _Failed(
                f"the probe function raised {error.get('type')}: {_line(error.get('message'))}"
            )
        if "result" not in reply:
            raise _Failed(f"no result in the reply: {_keys(reply)}")
        return reply["result"]


def _speaks(spoken: object, protocols: object) -> bool:
    """Whether a `/health` reply names a protocol version this node speaks."""
    versions = protocols if isinstance(protocols, list) else [spoken]
    return any(
        isinstance(v, int) and not isinstance(v, bool) and PROTOCOL_VERSION <= v <= MAX_PROTOCOL
        for v in versions
    )


def _versions() -> str:
    if PROTOCOL_VERSION == MAX_PROTOCOL:
        return f"protocol {PROTOCOL_VERSION}"
    return f"protocols {PROTOCOL_VERSION} to {MAX_PROTOCOL}"


def _said(ending: Ending) -> str:
    """`(exit status N)` and the last lines of output, for a reason."""
    status = "" if ending.status is None else f" (exit status {ending.status})"
    lines = [line.strip() for line in ending.output.splitlines() if line.strip()]
    if not lines:
        return f"{status}, without output"
    return f"{status}; its last output: {_line(' | '.join(lines[-OUTPUT_LINES:]))}"


def _line(text: object, limit: int = 300) -> str:
    """`text` on one line, at most `limit` characters."""
    one = " ".join(str(text).split())
    return one if len(one) <= limit else one[: limit - 1] + "…"


def _keys(reply: dict[str, Any]) -> str:
    return "fields " + ", ".join(sorted(map(str, reply))) if reply else "an empty object"
