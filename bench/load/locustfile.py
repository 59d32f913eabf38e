"""Locust scenarios for ``bench/sla.py``: an open loop of BEM API requests.

Run by ``bench/sla.py`` (headless, one Locust process per scenario); it writes the fixture
this file reads. Environment:

- ``BEM_LOAD_FIXTURE``: the JSON fixture (tokens, version ids, GlobalIds, selectors);
- ``BEM_LOAD_SCENARIO``: a key of ``MIXES``;
- ``BEM_LOAD_RATE``: arrivals per second, all Locust users together;
- ``BEM_LOAD_FOLLOWERS``: feed followers held open through the run (``live``), all users
  together.

Open loop: each user starts a request every ``users / rate`` seconds whether or not the
earlier ones have answered (a slow server does not slow the arrivals, as real clients
would not wait for each other), up to ``CONCURRENCY`` in flight per user.

The mixes are written down here; each request picks one of the fixture's users (its token),
so identities spread as they would across people and scripts. Think time is the
arrival schedule itself: there are no sessions that wait for their own answers.

``live``: followers hold a project's event stream (SSE) open, as the console and
integrations do, while uploads make events and people read. Each event a follower receives
of an upload has its delivery delay recorded (from its ``created_at``, the server's clock:
the same machine); when Locust quits, what the followers got of the uploads is written to
``BEM_LOAD_FEED_LOG``, apart from the requests' statistics (the feed has an objective of
its own). The stream itself is a ``follow`` request, timed to its headers.
"""

from __future__ import annotations

import json
import os
import random
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import gevent
import httpx
from locust import FastHttpUser, constant, events, task

FIXTURE: dict[str, Any] = json.loads(Path(os.environ["BEM_LOAD_FIXTURE"]).read_text())
SCENARIO = os.environ.get("BEM_LOAD_SCENARIO", "mixed")
RATE = float(os.environ.get("BEM_LOAD_RATE", "10"))
USERS = int(os.environ.get("BEM_LOAD_USERS", "1"))
FOLLOWERS = int(os.environ.get("BEM_LOAD_FOLLOWERS", "0"))
CONCURRENCY = 200  # requests in flight per user, followers included
GRACE_S = 1.0  # uploads answered this close to the end may not have reached followers yet
UPLOADS: list[tuple[float, str]] = []  # (answered at, version id) of each upload
FOLLOWED: list[dict[str, float]] = []  # per follower: version id -> delivery delay (ms)
ENDED: list[float] = []  # when the run stopped (followers stop listening)


@events.test_stopping.add_listener
def _stopping(**_: Any) -> None:
    ENDED.append(time.time())


@events.quitting.add_listener
def _write_feed_log(**_: Any) -> None:
    """What the followers got of the uploads answered up to ``GRACE_S`` before the run
    ended, and how long each delivery took."""
    if not FOLLOWERS or not (log := os.environ.get("BEM_LOAD_FEED_LOG")):
        return
    end = (ENDED[0] if ENDED else time.time()) - GRACE_S
    due = {version for at, version in UPLOADS if at <= end}
    delays = [got[v] for got in FOLLOWED for v in due if v in got]
    feed = {"delays_ms": delays, "expected": len(due) * len(FOLLOWED), "received": len(delays)}
    Path(log).write_text(json.dumps(feed))


# Weights per kind of request. ``mixed`` is the realistic one (issue #17): people browsing
# and reading elements, scripts running selectors and takeoffs, coordinators comparing.
MIXES: dict[str, dict[str, int]] = {
    "browse": {"browse": 40, "element": 30, "page": 30},
    "query": {"selector": 50, "adhoc": 30, "takeoff": 20},
    "diff": {"diff": 100},
    "upload": {"upload": 100},
    "live": {"upload": 20, "browse": 40, "page": 40},
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


class Deck:
    """The scenario's kinds, each as often as its weight, dealt in a shuffled order and
    shared by every user of the process: each round of ``sum(weights)`` arrivals has exactly
    the mix. (A random draw per arrival let a 20 s smoke run miss the 5 % of diffs.)"""

    def __init__(self, mix: dict[str, int]) -> None:
        self.cards = [kind for kind, weight in mix.items() for _ in range(weight)]
        self.left: list[str] = []

    def deal(self) -> str:
        if not self.left:
            self.left = random.sample(self.cards, len(self.cards))
        return self.left.pop()


DECK = Deck(MIXES[SCENARIO])


class Arrivals(FastHttpUser):
    """One stream of arrivals; ``BEM_LOAD_USERS`` of them share the rate."""

    wait_time = constant(0)
    concurrency = CONCURRENCY

    def on_start(self) -> None:
        for _ in range(FOLLOWERS // USERS):
            gevent.spawn(self.follow)

    @task
    def arrive(self) -> None:
        interval = USERS / RATE
        due = time.monotonic() + random.uniform(0, interval)  # users do not start in step
        while True:
            gevent.sleep(max(0.0, due - time.monotonic()))
            due += interval
            gevent.spawn(getattr(self, DECK.deal()))

    def _get(self, path: str, name: str, **params: Any) -> None:
        headers = {"Authorization": f"Bearer {random.choice(FIXTURE['tokens'])}"}
        self.client.get(path, params=params or None, headers=headers, name=name)

    def follow(self) -> None:
        """One follower of the project's events until the run ends, from the last event of
        the seeding on (``after``), so no upload of the run can come before it listens.
        Read with httpx (cooperative under Locust's gevent): the Locust client's streamed
        reads wait for 1 KiB, so small events arrived in clumps, seconds late."""
        headers = {"Authorization": f"Bearer {random.choice(FIXTURE['tokens'])}"}
        url = f"{self.host}/v1/projects/{FIXTURE['project']}/events/stream"
        got: dict[str, float] = {}
        FOLLOWED.append(got)
        started = time.perf_counter()
        params = {"after": FIXTURE["events_after"]}
        wait = httpx.Timeout(10.0, read=None)  # a quiet feed sends a keep-alive now and then
        # Unverified as Locust's own client is: the test edge's certificate is self-signed.
        client = httpx.Client(timeout=wait, verify=False)  # noqa: S501
        with client, client.stream("GET", url, params=params, headers=headers) as r:
            self.environment.events.request.fire(
                request_type="GET",
                name="follow",
                response_time=(time.perf_counter() - started) * 1000,
                response_length=0,
                exception=None if r.status_code == 200 else RuntimeError(r.status_code),
                context={},
            )
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                event = json.loads(line.removeprefix("data: "))
                if "created_at" not in event:  # the stream's end
                    return
                if event["kind"] == "version.created":
                    sent = datetime.fromisoformat(event["created_at"]).timestamp()
                    got[event["data"]["version_id"]] = max(0.0, (time.time() - sent) * 1000)

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
        response = self.client.post(
            f"/v1/models/{FIXTURE['upload_model']}/versions",
            data=FIXTURE["upload_body"],
            headers=headers,
            name="upload",
        )
        if response.status_code == 201:
            UPLOADS.append((time.time(), response.json()["id"]))
