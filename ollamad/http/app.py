"""The Starlette application: routes, gin's 404/405 answers, the safety and access layers."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ollamad.activity import Activity
from ollamad.http import ollama_api, openai_api, responses
from ollamad.http.access import AccessLog
from ollamad.http.exchange import Bridge
from ollamad.http.safety import Safety
from ollamad.http.settings import HTTPSettings
from ollamad.http.status import HTTPProblem
from ollamad.service import Service


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 405:
        return responses.raw("405 method not allowed", 405, responses.GIN_TEXT,
                             dict(exc.headers or {}))
    if exc.status_code == 404:
        return responses.raw("404 page not found", 404, responses.GIN_TEXT)
    return responses.raw(exc.detail, exc.status_code, responses.TEXT)


async def _gone(request: Request, exc: Exception) -> Response:
    # The client left while sending its body: nobody will read this answer.
    return responses.empty(499)


async def _problem(request: Request, exc: Exception) -> Response:
    """A body the bridge could not decode: in the envelope of the API that was called (Ollama's
    request middlewares answer through gin's c.JSON: no newline)."""
    assert isinstance(exc, HTTPProblem)
    if request.url.path.startswith("/v1/"):
        return responses.openai_error(exc.status, exc.message, newline=False)
    return responses.ollama_error(exc.status, exc.message)


def build(service: Service, settings: HTTPSettings, *, loopback: bool,
          activity: Activity | None = None) -> Starlette:
    app = Starlette(
        routes=[*ollama_api.routes(), *openai_api.routes()],
        middleware=[Middleware(AccessLog, activity=activity),
                    Middleware(Safety, origins=settings.origins, loopback=loopback,
                               api_keys=settings.api_keys, max_header=settings.max_header)],
        exception_handlers={HTTPException: _http_exception, HTTPProblem: _problem,
                            ClientDisconnect: _gone},
    )
    app.state.bridge = Bridge(service, settings)
    return app
