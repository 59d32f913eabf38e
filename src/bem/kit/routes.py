"""The app's API routes as one flat list, whichever way FastAPI stores included routers
(newer releases keep them as lazy ``_IncludedRouter`` entries)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, routing
from starlette.routing import compile_path


@dataclass(frozen=True)
class ApiRoute:
    path: str
    methods: frozenset[str]
    dependant: Any
    name: str


def api_routes(app: FastAPI) -> Iterator[ApiRoute]:
    iterate = getattr(routing, "iter_route_contexts", None)
    entries: Any = iterate(app.routes) if iterate is not None else app.routes
    for entry in entries:
        route = getattr(entry, "original_route", entry)
        if isinstance(route, routing.APIRoute):
            yield ApiRoute(
                path=str(entry.path),
                methods=frozenset(entry.methods or ()),
                dependant=getattr(entry, "dependant", route.dependant),
                name=route.name,
            )


def methods_for(app: FastAPI, path: str) -> set[str]:
    """Every method some route serves at ``path`` (for a correct ``Allow`` header)."""
    methods: set[str] = set()
    for route in api_routes(app):
        if compile_path(route.path)[0].match(path):
            methods |= route.methods
    return methods
