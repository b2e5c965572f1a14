"""The shipped runtimes the conformance tests run over, and the test functions in each language.

Every runtime of the catalogue (`spinlet/runtime/catalog.py`) is in `SHIPPED`: a runtime added
there is in every such test (its language's functions being in `SOURCES`). The tests taking
`shipped` (`tests/conftest.py`) run once per runtime: the conformance suite
(tests/integration/runtime/test_conformance.py), the behaviour of functions in the pool
(tests/integration/runtime/test_shipped_runtimes.py) and the hostile functions
(tests/integration/test_hostile.py).

Each hostile function is written as `attack(event)` in its language; `package` wraps it in a
handler that answers `"ping"` with `"pong"` and attacks on any other input. The others
(`hello`, `counter`, `raises`) are whole handlers.
"""

from __future__ import annotations

import io
import textwrap
import zipfile
from dataclasses import dataclass

from spinlet.runtime.catalog import CATALOG
from tests.helpers import PACKAGE_TIME


@dataclass(frozen=True)
class Shipped:
    name: str  # the runtime's name, as functions choose it (`runtime_id`)
    image: str  # its image's tag
    language: str  # the language of its functions: a key of `SOURCES`

    def package(self, function: str) -> bytes:
        """The function package of `function` (a key of `SOURCES[language]`) in this
        runtime's language, polite (`POLITE`) when it is an attack."""
        filename, polite = POLITE[self.language]
        source = SOURCES[self.language][function]
        if function in ATTACKS:
            source = textwrap.dedent(source) + textwrap.dedent(polite)
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            entry = zipfile.ZipInfo(filename, date_time=PACKAGE_TIME)
            archive.writestr(entry, textwrap.dedent(source), zipfile.ZIP_DEFLATED)
        return buffer.getvalue()


#: Every runtime Spinlet ships (the catalogue's; its build context names its language).
SHIPPED = tuple(Shipped(entry.name, entry.image, entry.context) for entry in CATALOG)

#: The type of the error `raises` raises, in each language.
RAISED = {"python": "ValueError", "nodejs": "Error"}

#: The attacks (wrapped in `POLITE`); the other functions are whole.
ATTACKS = ("fork bomb", "memory bomb", "flood", "spin", "exit")

#: Each language's file name of a package's module and the handler around an attack.
POLITE = {
    "python": (
        "main.py",
        """
        def main(event):
            if event == "ping":
                return "pong"
            return attack(event)
        """,
    ),
    "nodejs": (
        "main.js",
        """
        module.exports.main = async (event, context) => {
          if (event === "ping") {
            return "pong";
          }
          return attack(event);
        };
        """,
    ),
}

#: What the fork bomb's error message says in each language: the pids limit refused a process.
PIDS_EXHAUSTED = {
    "python": r"^\[Errno 11\] Resource temporarily unavailable$",
    "nodejs": r"EAGAIN",
}

SOURCES: dict[str, dict[str, str]] = {
    "python": {
        # Writes through the language, to fd 1 itself, from a child and to stderr.
        "hello": """
            import os, subprocess, sys

            def main(event, context):
                print("hello from print")
                sys.stdout.flush()
                os.write(1, b"hello from fd 1\\n")
                subprocess.run(["echo", "hello from a child"], check=True)
                print("hello from stderr", file=sys.stderr)
                return {"greeting": "hello " + event["name"], "execution_id": context.execution_id}
            """,
        "counter": """
            calls = 0

            def main(event):
                global calls
                calls += 1
                return calls
            """,
        "raises": """
            def main(event):
                print("about to fail")
                raise ValueError("boom " + str(event))
            """,
        # Forks (every child forking too) until the pids limit refuses.
        "fork bomb": """
            import os

            def attack(event):
                while True:
                    os.fork()
            """,
        "memory bomb": """
            def attack(event):
                chunks = []
                while True:
                    chunks.append(b"x" * (16 * 1024 * 1024))
            """,
        # `mib` MiB of lines from the language itself, then as many NULs from a child.
        "flood": """
            import subprocess, sys

            def attack(mib):
                line = "y" * 1023 + "\\n"
                for _ in range(mib * 1024):
                    sys.stdout.write(line)
                subprocess.run(["head", "-c", str(mib * 1024 * 1024), "/dev/zero"], check=True)
                return "flooded"
            """,
        "spin": """
            def attack(event):
                while True:
                    pass
            """,
        # The whole process ends, at once, without unwinding.
        "exit": """
            import os

            def attack(event):
                os._exit(3)
            """,
    },
    "nodejs": {
        "hello": """
            const childProcess = require("child_process");
            const fs = require("fs");

            module.exports.main = async (event, context) => {
              console.log("hello from print");
              fs.writeSync(1, "hello from fd 1\\n");
              childProcess.execFileSync("echo", ["hello from a child"], { stdio: "inherit" });
              console.error("hello from stderr");
              const id = context.executionId ?? context.execution_id;
              return { greeting: "hello " + event.name, execution_id: id };
            };
            """,
        "counter": """
            let calls = 0;

            module.exports.main = async (event) => {
              calls += 1;
              return calls;
            };
            """,
        "raises": """
            module.exports.main = (event) => {
              console.log("about to fail");
              throw new Error("boom " + String(event));
            };
            """,
        # No fork in Node.js: children that sleep, until the pids limit refuses one (a
        # failed spawn is an `error` event: `spawn sleep EAGAIN`).
        "fork bomb": """
            const childProcess = require("child_process");

            async function attack(event) {
              for (;;) {
                const child = childProcess.spawn("sleep", ["600"], { stdio: "ignore" });
                await new Promise((resolve, reject) => {
                  child.once("spawn", resolve);
                  child.once("error", reject);
                });
              }
            }
            """,
        "memory bomb": """
            function attack(event) {
              const chunks = [];
              for (;;) {
                chunks.push(Buffer.alloc(16 * 1024 * 1024, 120));
              }
            }
            """,
        "flood": """
            const childProcess = require("child_process");
            const fs = require("fs");

            function attack(mib) {
              const line = "y".repeat(1023) + "\\n";
              for (let i = 0; i < mib * 1024; i++) {
                fs.writeSync(1, line);
              }
              childProcess.execFileSync("head", ["-c", String(mib * 1024 * 1024), "/dev/zero"], {
                stdio: "inherit",
              });
              return "flooded";
            }
            """,
        "spin": """
            function attack(event) {
              for (;;) {}
            }
            """,
        "exit": """
            function attack(event) {
              process.exit(3);
            }
            """,
    },
}
