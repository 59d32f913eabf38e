"""The console's 3D view: time to the first frame of a version's geometry in headless
Chromium (Debian's), for the demo model at 1k and 10k elements.

For each size: a fresh SQLite database, ``bem demo --size N`` (the import and its geometry
job, timed), ``bem serve``, then ``--repeat`` page loads of ``#/versions/{id}/3d`` in a new
browser page each: from navigation to the canvas saying it has drawn the model (the GLB
fetched, parsed, uploaded and drawn once), and the GLB's size. Target (issue #20): the 10k
model's first frame in < 3 s. Prints JSON and writes ``bench/results/console.json``.
Usage: ``python bench/console.py [1000 10000] [--repeat N]``.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from report import take_repeat, write_report

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
# The same process and browser helpers as the e2e tests.
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, bem, bem_server  # noqa: E402


def first_frames(base: str, token: str, version: str, repeat: int) -> list[float]:
    from playwright.sync_api import sync_playwright

    session = json.dumps({"access_token": token, "refresh_token": None})
    seconds = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for _ in range(repeat):
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.goto(f"{base}/console#/signin")
            page.evaluate("s => sessionStorage.setItem('bem.session', s)", session)
            started = time.perf_counter()
            page.evaluate(f"() => {{ location.hash = '#/versions/{version}/3d'; }}")
            page.locator("canvas[data-loaded=true]").wait_for(timeout=120_000)
            seconds.append(time.perf_counter() - started)
            page.close()
        browser.close()
    return seconds


def case(size: int, repeat: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        clean = {k: v for k, v in os.environ.items() if not k.startswith("BEM_")}
        env = {
            **clean,
            "BEM_DATABASE_URL": f"sqlite+aiosqlite:///{tmp / 'bem.db'}",
            "BEM_RATE_LIMIT_ENABLED": "false",
        }
        bem(["migrate"], env, tmp)
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "bem", "demo", "--size", str(size)],
            env=env,
            cwd=tmp,
            check=True,
            capture_output=True,
            timeout=1800,
        )
        demo_s = time.perf_counter() - started
        token = bem(["users", "create-admin", "--email", "bench@example.com"], env, tmp)
        secret = token.stdout.strip()
        with bem_server(env, tmp) as (base, _):
            headers = {"Authorization": f"Bearer {secret}"}
            project = httpx.get(f"{base}/v1/projects", headers=headers).json()["items"][0]
            model = httpx.get(f"{base}/v1/projects/{project['id']}/models", headers=headers)
            versions = httpx.get(
                f"{base}/v1/models/{model.json()['items'][0]['id']}/versions", headers=headers
            )
            version = versions.json()["items"][0]["id"]
            geometry = httpx.get(f"{base}/v1/versions/{version}/geometry", headers=headers).json()
            frames = first_frames(base, secret, version, repeat)
    return {
        "elements": size,
        "demo_import_and_geometry_s": round(demo_s, 2),
        "glb_mib": round(geometry["bytes"] / 2**20, 2),
        "drawn_elements": geometry["elements"],
        "meshes": geometry["meshes"],
        "first_frame_s_median": round(statistics.median(frames), 3),
        "first_frame_s": [round(s, 3) for s in frames],
    }


def main(sizes: list[int], repeat: int) -> None:
    rows = [case(size, repeat) for size in sizes]
    write_report(
        "console",
        {"targets": {"first_frame_s_10k": 3.0}, "repeat": repeat, "results": rows},
    )


if __name__ == "__main__":
    args = sys.argv[1:]
    repeat = take_repeat(args, 5)
    main([int(a) for a in args] or [1000, 10000], repeat)
