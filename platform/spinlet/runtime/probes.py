"""The tiny functions the conformance suite (`conformance.py`) loads into a runtime, one per
language: the same function written in each, doing what its input's `action` says.

- `echo`: returns `value`;
- `raise`: raises an exception whose message is `message`;
- `log`: writes each of `markers` on a line of its own: the first through the language's own
  standard output, the second straight to file descriptor 1, the third from a child process
  that inherits fd 1, the fourth to standard error; returns `"logged"`;
- `large`: returns a string of `size` times `"x"`;
- `spin`: loops forever (the node ends it).

A runtime of another language is checked with one of these when its image says which language
its functions are in (the label `spinlet.runtime`, or the `/health` reply's `language`).
"""

from __future__ import annotations

import io
import zipfile

#: The probe's entry: module `main`, function `main`, in every language.
ENTRY = "main.main"

PYTHON = """\
import os
import subprocess
import sys

CHILD = "import os, sys; os.write(1, sys.argv[1].encode() + b'\\\\n')"


def main(event, context):
    action = event["action"]
    if action == "echo":
        return event["value"]
    if action == "raise":
        raise ValueError(event["message"])
    if action == "log":
        own, fd1, child, stderr = event["markers"]
        print(own, flush=True)
        os.write(1, (fd1 + "\\n").encode())
        subprocess.run([sys.executable, "-c", CHILD, child], check=True)
        print(stderr, file=sys.stderr, flush=True)
        return "logged"
    if action == "large":
        return "x" * event["size"]
    if action == "spin":
        while True:
            pass
    raise ValueError("unknown action " + repr(action))
"""

NODEJS = """\
"use strict";
const childProcess = require("child_process");
const fs = require("fs");

const CHILD = "require('fs').writeSync(1, process.argv[1] + '\\\\n')";

module.exports.main = async (event, context) => {
  switch (event.action) {
    case "echo":
      return event.value;
    case "raise":
      throw new Error(event.message);
    case "log": {
      const [own, fd1, child, stderr] = event.markers;
      console.log(own);
      fs.writeSync(1, fd1 + "\\n");
      const ran = childProcess.spawnSync(process.execPath, ["-e", CHILD, child], {
        stdio: "inherit",
      });
      if (ran.status !== 0) {
        throw new Error("the child process failed: " + (ran.error || ran.status));
      }
      console.error(stderr);
      return "logged";
    }
    case "large":
      return "x".repeat(event.size);
    case "spin":
      for (;;) {}
  }
  throw new Error("unknown action " + JSON.stringify(event.action));
};
"""

#: Each language's probe: the file it is in, and its source.
PROBES: dict[str, tuple[str, str]] = {
    "python": ("main.py", PYTHON),
    "nodejs": ("main.js", NODEJS),
}
LANGUAGES = tuple(PROBES)


def language_of(name: object) -> str | None:
    """The language a runtime's name says (`python3.13` → python, `nodejs20` → nodejs), or
    None for a name that says none of those (or no name)."""
    if not isinstance(name, str):
        return None
    lowered = name.strip().lower()
    if lowered.startswith("python"):
        return "python"
    if lowered.startswith(("node", "javascript")):
        return "nodejs"
    return None


def probe_package(language: str) -> bytes:
    """The probe function of `language` as a function package (a zip)."""
    filename, source = PROBES[language]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(zipfile.ZipInfo(filename, date_time=(2020, 1, 1, 0, 0, 0)), source)
    return buffer.getvalue()
