"""No route or dependency of the app is a plain ``def``: FastAPI would run it in a worker
thread, a thread hop on every request (two of them cost a cached page about 3 % of its
CPU under load, py-spy)."""

from __future__ import annotations

import inspect
from typing import Any

from fastapi.dependencies.models import Dependant

from bem.app import create_app
from bem.config import Settings
from bem.kit.routes import api_routes


def _calls(dependant: Dependant) -> list[Any]:
    found = []
    for dep in dependant.dependencies:
        if dep.call is not None:
            found.append(dep.call)
        found += _calls(dep)
    return found


def _is_async(call: Any) -> bool:
    target = call if inspect.isfunction(call) or inspect.ismethod(call) else call.__call__
    return inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target)


def test_every_route_and_dependency_runs_on_the_event_loop() -> None:
    app = create_app(Settings(profile="test"))
    threaded = set()
    for route in api_routes(app):
        for call in [route.dependant.call, *_calls(route.dependant)]:
            if call is not None and not _is_async(call):
                threaded.add(f"{route.path}: {getattr(call, '__qualname__', call)}")
    assert not threaded, sorted(threaded)
