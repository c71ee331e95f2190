"""JSON request bodies validated by the route itself, after authentication.

A body declared as a FastAPI parameter is read and validated through FastAPI's
dependency machinery before the route runs (~30 us per request on ``/v1/route``, and
before the API key is checked). :func:`parse` reads the body and validates it in one step
with pydantic's JSON parser; a body it refuses is parsed and validated again the way
FastAPI does (stdlib ``json``, then pydantic's Python mode), so what is accepted and
every error answer are those of a declared body. :func:`openapi_body` and
:func:`document` keep the body in the OpenAPI schema, and :class:`DirectRoute` calls such
an endpoint without FastAPI's parameter solving.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ValidationError
from pydantic.json_schema import models_json_schema

from serving.browsers import is_json

M = TypeVar("M", bound=BaseModel)

_NOT_AN_OBJECT = {"type": "model_attributes_type", "loc": ("body",),
                  "msg": "Input should be a valid dictionary or object to extract fields from"}
_REF = "#/components/schemas/{model}"
INVALID = {"description": "Invalid request: `error.field` names what is wrong"}


async def parse(request: Request, model: type[M]) -> M:
    """The request's JSON body as ``model``; raises FastAPI's errors for a declared body."""
    raw = await request.body()  # BodyLimit's 413 is raised from here
    if not raw:
        raise RequestValidationError([{"type": "missing", "loc": ("body",),
                                       "msg": "Field required", "input": None}])
    if not is_json(request.headers.get("content-type")):
        raise RequestValidationError([{**_NOT_AN_OBJECT, "input": raw}])
    try:
        return model.model_validate_json(raw)
    except ValidationError:
        # Refused: parse and validate again the way FastAPI does (stdlib json, pydantic's
        # Python mode), so that a bad body gets the status and messages it always got
        # ("a valid list", not JSON mode's "a valid array"; 400 for a body that is not
        # UTF-8). Only bad requests take this path.
        return _validate_stdlib(raw, model)


def _validate_stdlib(raw: bytes, model: type[M]) -> M:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise RequestValidationError([{"type": "json_invalid", "loc": ("body", exc.pos),
                                       "msg": "JSON decode error", "input": {},
                                       "ctx": {"error": exc.msg}}]) from None
    except Exception as exc:  # not UTF-8, nested too deeply: FastAPI's 400
        raise HTTPException(400, "There was an error parsing the body") from exc
    try:
        return model.model_validate(value, from_attributes=True)  # as FastAPI validates
    except UnicodeEncodeError as exc:  # a lone surrogate in a key pydantic reports on
        raise HTTPException(400, "body: holds a lone surrogate (\\ud800-\\udfff), which "
                            "is not valid Unicode") from exc
    except ValidationError as exc:
        raise RequestValidationError(
            [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        ) from None


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting ``model`` as the route's required JSON body."""
    ref = {"$ref": _REF.format(model=model.__name__)}
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": ref}}}}


def document(app: FastAPI, models: Iterable[type[BaseModel]]) -> None:
    """Add the schemas of ``models`` (and the models they use) to ``app``'s OpenAPI."""
    models = tuple(models)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            _, top = models_json_schema([(m, "validation") for m in models],
                                        ref_template=_REF)
            found = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, definition in top.get("$defs", {}).items():
                found.setdefault(name, definition)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


class DirectRoute(APIRoute):
    """A route whose endpoint takes the ``Request`` and returns a ``Response`` itself.

    FastAPI still documents it (``openapi_extra``, ``responses``) and maps its errors,
    but calls the endpoint directly: no parameters to solve, nothing to serialize
    (FastAPI's request handler costs ~25 us per request even then). For
    ``APIRouter(route_class=DirectRoute)``, FastAPI's hook for custom route classes.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        endpoint: Callable[[Request], Coroutine[Any, Any, Response]] = self.endpoint
        return endpoint
