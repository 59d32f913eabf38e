"""The request path against a bare FastAPI app, in one run (#17's ratios).

One stack (``sla.Stack``: a fresh PostgreSQL database, Redis, a generated model in two
versions) and, per round, each variant of ``bem serve --workers 2`` in turn and a bare
FastAPI app on the same engine settings (``bench/bare_app.py``: one JSONB row through
SQLAlchemy async + asyncpg, 2 uvicorn workers). wrk (``-t2 -c16``) asks each endpoint for
``--seconds``; the rounds interleave the variants, so the machine's drift hits them alike.
wrk runs on the same 2 cores as the server. Reports req/s, p50/p99 latency and server CPU
per request, each as the median of the rounds, and the ratio to the bare one-row read.
The element and selector pages (100 elements) are answered from the cache except in the
``no-cache`` variant.

Variants: ``bem`` (as configured by default), ``no-memo`` (``BEM_AUTH_MEMO_S=0``: every
request looks its credential and the version up in PostgreSQL), ``no-cache``
(``BEM_CACHE_ENABLED=false``: every page is computed), and with ``--baseline DIR`` ``baseline``: the
same server from another checkout's ``src`` (``git worktree add DIR <rev>``), for a before
and after in one run. Usage::

    python bench/hotpath.py --rounds 3 --seconds 8 [--baseline /tmp/before]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from report import cpu_seconds, write_report
from sla import Stack, _wait_ready, spare_port

HERE = Path(__file__).resolve().parent
VARIANTS: dict[str, dict[str, str]] = {
    "bem": {},
    "no-memo": {"BEM_AUTH_MEMO_S": "0"},
    "no-cache": {"BEM_CACHE_ENABLED": "false"},  # its pages are the uncached ones
}


def endpoints(fixture: dict[str, Any]) -> dict[str, str]:
    v1 = fixture["versions"][0]
    return {
        "health_live": "/health/live",
        "one_element": f"/v1/versions/{v1}/elements/{fixture['global_ids'][7]}",
        "element_page": f"/v1/versions/{v1}/elements?limit=100",
        "selector_page": f"/v1/versions/{v1}/elements?q=IfcWall&limit=100",
    }


def wrk(url: str, seconds: int, token: str | None) -> dict[str, float]:
    args = ["wrk", "-t2", "-c16", f"-d{seconds}s", "--latency", url]
    if token:
        args[1:1] = ["-H", f"Authorization: Bearer {token}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": rate,
        "p50_ms": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "p99_ms": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "errors": int(errors.group(1)) if errors else 0,
    }


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def measure(
    server: subprocess.Popen[bytes], url: str, seconds: int, token: str | None
) -> dict[str, float]:
    for _ in range(50):  # warm: the connection pools, the cache, the memo
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        assert httpx.get(url, headers=headers, timeout=30).status_code == 200, url
    before = cpu_seconds(server.pid)
    result = wrk(url, seconds, token)
    spent = cpu_seconds(server.pid) - before
    result["server_cpu_ms_per_request"] = 1000 * spent / max(1, result["rps"] * seconds)
    return result


def start(args: list[str], env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    _wait_ready(f"http://127.0.0.1:{port}", server)
    return server


def stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    server.wait(60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--elements", type=int, default=10_000)
    parser.add_argument("--baseline", type=Path, default=None, help="another checkout")
    parser.add_argument("--out", type=Path, default=None)
    options = parser.parse_args()
    variants = dict(VARIANTS)
    if options.baseline is not None:
        variants["baseline"] = {"PYTHONPATH": str(options.baseline.resolve() / "src")}
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    runs: dict[str, dict[str, list[dict[str, float]]]] = {}
    with Stack(options.elements, users=1).running() as stack:
        for server in stack.servers:  # the stack's own server: each variant starts its own
            stop(server)
        stack.servers.clear()
        token = stack.fixture["tokens"][0]
        paths = endpoints(stack.fixture)
        for _ in range(options.rounds):
            port = spare_port()
            bare_env = {**stack.env, "BARE_PORT": str(port)}
            bare = start([sys.executable, str(HERE / "bare_app.py")], bare_env, port)
            try:
                url = f"http://127.0.0.1:{port}/db"
                runs.setdefault("bare", {}).setdefault("one_row", []).append(
                    measure(bare, url, options.seconds, None)
                )
            finally:
                stop(bare)
            for variant, extra in variants.items():
                port = spare_port()
                command = [
                    sys.executable,
                    "-m",
                    "bem",
                    "serve",
                    "--port",
                    str(port),
                    "--workers",
                    "2",
                ]
                server = start(command, {**stack.env, **extra}, port)
                try:
                    for name, path in paths.items():
                        url = f"http://127.0.0.1:{port}{path}"
                        runs.setdefault(variant, {}).setdefault(name, []).append(
                            measure(server, url, options.seconds, token)
                        )
                finally:
                    stop(server)
    report = summarize(runs)
    print(json.dumps(report["medians"], indent=2))
    chosen = vars(options) | {"out": None, "baseline": str(options.baseline)}
    write_report("hotpath", {"options": chosen, **report}, options.out)


def summarize(runs: dict[str, dict[str, list[dict[str, float]]]]) -> dict[str, Any]:
    medians = {
        variant: {
            name: {k: round(statistics.median(r[k] for r in rounds), 2) for k in rounds[0]}
            for name, rounds in by_name.items()
        }
        for variant, by_name in runs.items()
    }
    bare = medians["bare"]["one_row"]["rps"]
    for by_name in medians.values():
        for result in by_name.values():
            result["x_bare_one_row"] = round(result["rps"] / bare, 2)
    return {"medians": medians, "rounds": runs}


if __name__ == "__main__":
    main()
