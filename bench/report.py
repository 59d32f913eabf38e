"""Shared by the benchmarks: one JSON report per benchmark in bench/results/, also printed."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any


def write_report(name: str, data: dict[str, Any]) -> None:
    report = {
        "benchmark": name,
        "python": platform.python_version(),
        "machine": f"{os.cpu_count()} cpu",
        **data,
    }
    out = Path(__file__).parent / "results" / f"{name}.json"
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
