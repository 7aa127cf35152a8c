"""Unknown query parameters are refused, on every REST endpoint, in one place.

FastAPI ignores a query parameter an endpoint does not declare, so ``?range=far`` on a
server without it, or ``?detetc=false``, used to be silently dropped and the caller never
knew (issue 23). ``strict_query`` runs as an app-wide dependency: it compares the request's
parameters with those the matched route declares (its signature and its dependencies'),
and answers any other one with a 422 ``unknown_parameter`` naming it: at once on the open
endpoints, and after the credential check on those behind the auth layer.
"""

from __future__ import annotations

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import HTTPConnection

from emostream.stream.errors import ApiError

#: Read by the auth layer on every endpoint, not by the signature: it answers ``?token=``
#: where it is not read with its own 401 (``token_in_query``).
EVERYWHERE = frozenset({"token"})
#: Pages for a browser, not API: a bookmark or a tracker may add what it likes.
LENIENT_PATHS = frozenset({"/"})
#: Endpoints behind the auth layer (``stream/auth.py: Guard``): the 422 waits for it, so a
#: request without a valid credential gets its 401 (or 404) and learns nothing more.
GUARDED = ("/v1/", "/whip", "/metrics", "/openapi.json")


def declared(route: APIRoute) -> frozenset[str]:
    """The query parameters ``route`` declares (its own and its dependencies', by alias):
    an endpoint reads a parameter through ``Query``, so the OpenAPI documents it too."""
    names: set[str] = set()
    todo: list[Dependant] = [route.dependant]
    while todo:
        dependant = todo.pop()
        names.update(p.alias for p in dependant.query_params)
        todo.extend(dependant.dependencies)
    return frozenset(names) | EVERYWHERE


def strict_query(connection: HTTPConnection) -> None:
    """A 422 naming the first query parameter the matched endpoint does not take."""
    route = connection.scope.get("route")
    if connection.scope.get("type") != "http" or not isinstance(route, APIRoute):
        return
    if route.path in LENIENT_PATHS:
        return
    known = declared(route)
    unknown = sorted({k for k in connection.query_params if k not in known})
    if unknown:
        takes = ", ".join(sorted(known - EVERYWHERE)) or "none"
        names = ", ".join(repr(u[:40]) for u in unknown[:5])
        refusal = ApiError(
            422,
            "unknown_parameter",
            f"unknown query parameter {names} for {route.path}; it takes: {takes}",
        )
        if not route.path.startswith(GUARDED):
            raise refusal
        connection.state.unknown_query = refusal  # raised by the Guard once it has passed
