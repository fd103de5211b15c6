"""Writing results: JSON files under ``bench/results/`` and sections of ``docs/benchmarks.md``.

Each benchmark owns one section of the markdown file, fenced by HTML comments
(``<!-- bench:NAME -->`` ... ``<!-- /bench:NAME -->``); a new run replaces its section and
leaves the others alone, and the JSON files keep every run.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DOCS = ROOT / "docs" / "benchmarks.md"
MACHINE_NOTE = "2-core CPU, shared"

HEADER = """# Benchmarks

Figures in this file are written by the harness in `bench/` (see each section's command); the
JSON of every run is kept under `bench/results/`. On a shared CPU machine absolute numbers move
with the neighbours' load, so compare the ratios measured within one run; absolute times are only
quoted from a GPU.
"""


def stamp() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def command_line(module: str) -> str:
    """The command that is running now, as one would type it from the repository root."""
    return shlex.join([".venv/bin/python", "-m", module, *sys.argv[1:]])


def machine() -> dict[str, Any]:
    """The machine, in words and numbers (load average: how busy the neighbours were)."""
    model = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        found = re.search(r"^model name\s*:\s*(.+)$", cpuinfo.read_text(), re.M)
        model = found.group(1).strip() if found else model
    return {
        "note": MACHINE_NOTE,
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def write_json(name: str, data: dict[str, Any]) -> Path:
    """``bench/results/<name>-<UTC time>.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}-{stamp()}.json"
    path.write_text(json.dumps(data, indent=1, default=str) + "\n")
    return path


Render = Callable[[dict[str, Any], str, Path, dict[str, Any]], str]


def publish(module: str, name: str, result: dict[str, Any], render: Render, docs: bool) -> None:
    """Keep a run of ``python -m module``: its JSON, then its markdown printed and, with ``docs``,
    written to the ``name`` section. ``render(result, command, json_path, machine)`` makes the markdown."""
    command = command_line(module)
    path = write_json(name, {**result, "command": command})
    text = render(result, command, path.relative_to(ROOT), result["machine"])
    print(text)
    if docs:
        update_section(name, text)


def print_json(data: dict[str, Any], path: Path | None) -> None:
    """Print ``data`` as JSON, and write it to ``path`` too when one is given."""
    text = json.dumps(data, indent=1)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    print(text)


def update_section(name: str, body: str, path: Path = DOCS) -> None:
    """Replace (or append) the section fenced for ``name`` in the markdown file."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    text = path.read_text() if path.is_file() else HEADER
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
    found = pattern.search(text)
    text = pattern.sub(lambda _: block, text) if found else text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def fmt(value: float | None, digits: int = 2) -> str:
    """A number for a table cell; an em dash when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
