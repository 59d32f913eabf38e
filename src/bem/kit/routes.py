"""The app's API routes as one flat list, whichever way FastAPI stores included routers
(newer releases keep them as lazy ``_IncludedRouter`` entries)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, routing
from starlette.requests import HTTPConnection
from starlette.routing import compile_path

from bem.kit.errors import Problem


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


def query_parameters(route: Any) -> set[str]:
    """The query parameters of a route and of its dependencies (a walk of a few nodes)."""
    found: set[str] = set()
    pending = [route.dependant]
    while pending:
        dependant = pending.pop()
        found.update(param.alias for param in dependant.query_params)
        pending.extend(dependant.dependencies)
    return found


async def refuse_unknown_query(conn: HTTPConnection) -> None:
    """A router dependency: a query parameter the route does not declare is a 400 naming it
    (a misspelt ``limt=`` was ignored, and the default silently used)."""
    route = conn.scope.get("route")
    if conn.scope["type"] != "http" or route is None:
        return
    if unknown := sorted(set(conn.query_params) - query_parameters(route)):
        raise Problem(
            f"Unknown query parameter {unknown[0]!r} for this operation.",
            slug="unknown-parameter",
            parameter=unknown[0],
        )
