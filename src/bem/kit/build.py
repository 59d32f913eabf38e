"""What is running: the package version and the commit it was built from.

The commit comes from ``BEM_BUILD_COMMIT`` (the image build sets it from a build argument);
when BEM runs from a git checkout (``make run``, tests) without it, from that checkout's
HEAD; otherwise it is ``unknown``. It labels ``bem_build_info``, the ``/health`` detail and
error reports, so an operator can tell which build raised an alert.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bem import __version__

UNKNOWN = "unknown"
GIT_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Build:
    version: str
    commit: str


@functools.cache
def _checkout_head() -> str:
    """HEAD of the git work tree the package runs from, or ``unknown`` (installed from a
    wheel, no git, or a slow file system)."""
    git = shutil.which("git")
    if git is None:
        return UNKNOWN
    try:
        done = subprocess.run(  # noqa: S603 - fixed arguments, no user input
            [git, "-C", str(Path(__file__).parent), "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return UNKNOWN
    head = done.stdout.strip()
    return head if done.returncode == 0 and head else UNKNOWN


def build_of(configured_commit: str | None) -> Build:
    return Build(version=__version__, commit=configured_commit or _checkout_head())
