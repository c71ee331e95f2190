"""A direct lane to the hottest endpoints, past FastAPI's router.

FastAPI reaches an endpoint through its exception middleware, an exit-stack middleware,
its router (which tries the routes of every included router in turn) and a per-route
request handler with two exit stacks of its own: ~20 us of CPU per request on
``/v1/route`` measured in process (``benchmarks/bench_route_overhead.py``), where the
whole request costs ~400 us in a server under load (docs/service.md, "Session 6").
The endpoints of a :class:`~serving.routes.body.DirectRoute` need none of that: they
take the ``Request``, validate the body themselves and return a ``Response``.

:class:`DirectLane` is ASGI middleware installed innermost (inside the body-size and rate
limits, so both still apply). A request whose method and path are one of its endpoints'
is handed to that endpoint under the app's own exception handlers, through Starlette's
``ExceptionMiddleware`` built from ``app.exception_handlers`` as Starlette builds it: the
same status and body for every error as through the router. Everything else goes on
down the stack. The endpoints stay registered with their routers, which document them in
the OpenAPI schema and serve them where the lane does not (a ``root_path`` it cannot
strip, or a request FastAPI traces with OpenTelemetry, which names its span after the
route the router selects).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from fastapi import FastAPI
from fastapi.routing import APIRoute, APIRouter
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


def lane_routes(*routers: APIRouter) -> dict[tuple[str, str], APIRoute]:
    """The routes of ``routers`` the lane may serve: ``(method, path) -> route``.

    Only routes whose endpoint takes the request and returns a response (a
    ``DirectRoute``) and whose path has no parameters; the routers are included in the
    app without a prefix of their own.
    """
    from serving.routes.body import DirectRoute

    out: dict[tuple[str, str], APIRoute] = {}
    for router in routers:
        for route in router.routes:
            if isinstance(route, DirectRoute) and not route.param_convertors:
                for method in route.methods or ():
                    out[(method, route.path)] = route  # the path includes the router's prefix
    return out


class DirectLane:
    """ASGI middleware: requests for ``routes`` go straight to their endpoints."""

    def __init__(self, app: ASGIApp, *, routes: Mapping[tuple[str, str], APIRoute]) -> None:
        self.app = app
        self.routes = dict(routes)
        self._lanes: dict[tuple[str, str], ASGIApp] | None = None
        self._for: FastAPI | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # FastAPI's OpenTelemetry (a span for this request, "fastapi.telemetry" in the
        # scope) learns the route from the router: such requests take the router.
        if (scope["type"] == "http" and not scope.get("root_path")
                and scope.get("fastapi.telemetry") is None):
            key = (scope["method"], scope["path"])
            if key in self.routes:
                lanes = self._lanes if self._for is scope.get("app") else None
                if lanes is None:
                    lanes = self._build(scope["app"])
                scope["route"] = route = self.routes[key]
                scope["endpoint"] = route.endpoint
                scope.setdefault("path_params", {})
                await lanes[key](scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _build(self, app: FastAPI) -> dict[tuple[str, str], ASGIApp]:
        # As Starlette.build_middleware_stack builds the ExceptionMiddleware: every handler
        # but the server error one (500 / Exception), which ServerErrorMiddleware above
        # keeps. Built at the first request, once every handler is registered.
        handlers = {k: v for k, v in app.exception_handlers.items()
                    if k not in (500, Exception)}
        self._lanes = {
            key: ExceptionMiddleware(_asgi(route.endpoint), handlers=handlers,
                                     debug=app.debug)
            for key, route in self.routes.items()
        }
        self._for = app
        return self._lanes


def _asgi(endpoint: Endpoint) -> ASGIApp:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)

    return app


__all__ = ["DirectLane", "lane_routes"]
