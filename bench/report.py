"""Shared by the benchmarks: one JSON report per benchmark in bench/results/, also printed."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def peak_rss_mib() -> float:
    """This process's peak resident memory (VmHWM). Not ``ru_maxrss``: on Linux a child
    inherits its parent's ``ru_maxrss`` at fork, so a benchmark child spawned by a parent
    that held a large model would report the parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def cpu_seconds(pid: int) -> float:
    """CPU time of ``pid`` and every descendant still running (uvicorn's workers)."""
    total = 0.0
    for p in [pid, *_descendants(pid)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _descendants(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        for child in task.read_text().split():
            found += [int(child), *_descendants(int(child))]
    return found


def write_report(name: str, data: dict[str, Any], directory: Path | None = None) -> None:
    """``directory``: bench/results unless given (a test's run writes elsewhere)."""
    report = {
        "benchmark": name,
        "python": platform.python_version(),
        "machine": f"{os.cpu_count()} cpu",
        **data,
    }
    out = (directory or Path(__file__).parent / "results") / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


def take_repeat(args: list[str], default: int) -> int:
    """Remove ``--repeat N`` from ``args`` (a script's own list); N, else ``default``."""
    if "--repeat" not in args:
        return default
    at = args.index("--repeat")
    repeat = int(args[at + 1])
    del args[at : at + 2]
    return repeat
