"""Which backups to keep: the newest ``last``, plus the newest of each of the latest ``daily``
days and ``weekly`` ISO weeks that have one (restic's and borg's rules; a backup kept by any
rule is kept). Backups are named by their UTC timestamp, so names sort by time."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime

STAMP = "%Y%m%dT%H%M%S%fZ"


def stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(STAMP)


def moment_of(name: str) -> datetime:
    return datetime.strptime(name, STAMP).replace(tzinfo=UTC)


def _newest_per(names: list[str], period: Callable[[datetime], object], count: int) -> set[str]:
    kept: dict[object, str] = {}
    for name in names:  # newest first: the first name of a period is its newest
        key = period(moment_of(name))
        if key not in kept and len(kept) < count:
            kept[key] = name
    return set(kept.values())


def to_keep(names: Iterable[str], *, last: int, daily: int = 0, weekly: int = 0) -> set[str]:
    newest_first = sorted(names, reverse=True)
    return (
        set(newest_first[:last])
        | _newest_per(newest_first, lambda m: m.date(), daily)
        | _newest_per(newest_first, lambda m: m.isocalendar()[:2], weekly)
    )
