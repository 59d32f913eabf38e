"""Locust scenarios for ``bench/sla.py``: an open loop of BEM API requests.

Run by ``bench/sla.py`` (headless, one Locust process per scenario); it writes the fixture
this file reads. Environment:

- ``BEM_LOAD_FIXTURE``: the JSON fixture (tokens, version ids, GlobalIds, selectors);
- ``BEM_LOAD_SCENARIO``: a key of ``MIXES``;
- ``BEM_LOAD_RATE``: arrivals per second, all Locust users together.

Open loop: each user starts a request every ``users / rate`` seconds whether or not the
earlier ones have answered (a slow server does not slow the arrivals, as real clients
would not wait for each other), up to ``CONCURRENCY`` in flight per user.

The mixes are written down here; each request picks one of the fixture's users (its token),
so identities spread as they would across people and scripts. Think time is the
arrival schedule itself: there are no sessions that wait for their own answers.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path
from typing import Any

import gevent
from locust import FastHttpUser, constant, task

FIXTURE: dict[str, Any] = json.loads(Path(os.environ["BEM_LOAD_FIXTURE"]).read_text())
SCENARIO = os.environ.get("BEM_LOAD_SCENARIO", "mixed")
RATE = float(os.environ.get("BEM_LOAD_RATE", "10"))
USERS = int(os.environ.get("BEM_LOAD_USERS", "1"))
CONCURRENCY = 200

# Weights per kind of request. ``mixed`` is the realistic one (issue #17): people browsing
# and reading elements, scripts running selectors and takeoffs, coordinators comparing.
MIXES: dict[str, dict[str, int]] = {
    "browse": {"browse": 40, "element": 30, "page": 30},
    "query": {"selector": 50, "adhoc": 30, "takeoff": 20},
    "diff": {"diff": 100},
    "upload": {"upload": 100},
    "mixed": {
        "browse": 12,
        "element": 20,
        "page": 30,
        "selector": 15,
        "adhoc": 10,
        "takeoff": 8,
        "diff": 5,
    },
}


class Arrivals(FastHttpUser):
    """One stream of arrivals; ``BEM_LOAD_USERS`` of them share the rate."""

    wait_time = constant(0)
    concurrency = CONCURRENCY

    @task
    def arrive(self) -> None:
        mix = MIXES[SCENARIO]
        kinds, weights = list(mix), list(mix.values())
        interval = USERS / RATE
        due = time.monotonic() + random.uniform(0, interval)  # users do not start in step
        while True:
            gevent.sleep(max(0.0, due - time.monotonic()))
            due += interval
            kind = random.choices(kinds, weights)[0]
            gevent.spawn(getattr(self, kind))

    def _get(self, path: str, name: str, **params: Any) -> None:
        headers = {"Authorization": f"Bearer {random.choice(FIXTURE['tokens'])}"}
        self.client.get(path, params=params or None, headers=headers, name=name)

    def browse(self) -> None:
        path = random.choice(
            [
                "/v1/projects",
                f"/v1/projects/{FIXTURE['project']}/models",
                f"/v1/models/{FIXTURE['model']}/versions",
                f"/v1/versions/{FIXTURE['versions'][0]}",
            ]
        )
        self._get(path, "browse")

    def element(self) -> None:
        gid = random.choice(FIXTURE["global_ids"])
        self._get(f"/v1/versions/{FIXTURE['versions'][0]}/elements/{gid}", "element")

    def page(self) -> None:
        """A page of a version's elements; the first pages are what people open (cached)."""
        cursor = random.choice(FIXTURE["cursors"])
        params = {"cursor": cursor} if cursor else {}
        self._get(f"/v1/versions/{FIXTURE['versions'][0]}/elements", "page", **params)

    def selector(self) -> None:
        """A selector a team runs again and again (cached after the first)."""
        q = random.choice(FIXTURE["selectors"])
        self._get(f"/v1/versions/{FIXTURE['versions'][0]}/elements", "selector", q=q)

    def adhoc(self) -> None:
        """A selector nobody asked before: never cached."""
        q = f'IfcWall, Name="Wall {random.randrange(10**6):06d}"'
        self._get(f"/v1/versions/{FIXTURE['versions'][0]}/elements", "adhoc", q=q)

    def takeoff(self) -> None:
        group_by = random.choice(["class", "storey", "storey,class", "type", "material"])
        self._get(f"/v1/versions/{FIXTURE['versions'][0]}/takeoff", "takeoff", group_by=group_by)

    def diff(self) -> None:
        old, new = FIXTURE["versions"]
        kind = random.choice(["added", "removed", "changed"])
        self._get(f"/v1/versions/{old}/diff/{new}", "diff", kind=kind)

    def upload(self) -> None:
        """A small model uploaded as NDJSON: a new version each time."""
        headers = {
            "Authorization": f"Bearer {random.choice(FIXTURE['tokens'])}",
            "Content-Type": "application/x-ndjson",
        }
        self.client.post(
            f"/v1/models/{FIXTURE['upload_model']}/versions",
            data=FIXTURE["upload_body"],
            headers=headers,
            name="upload",
        )
