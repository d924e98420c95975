"""The FastAPI app: one app for every listener (listener.py wraps it once per listener).

The routes live in ``routes_marqo``, ``routes_native`` and ``embeddings``; the error
boundary in ``error_handlers``; the documented error bodies in ``openapi``.
"""

from __future__ import annotations

from fastapi import FastAPI

from modelctl import __version__
from modelctl.daemon import embeddings, routes_marqo, routes_native
from modelctl.daemon.error_handlers import EXCEPTION_HANDLERS
from modelctl.daemon.openapi import ERROR_RESPONSES
from modelctl.daemon.state import DaemonState


def create_app(state: DaemonState) -> FastAPI:
    # No /docs or /redoc: FastAPI's pages load Swagger UI and ReDoc from a CDN, so they
    # are blank offline; /openapi.json is the whole API for any viewer or generator.
    app = FastAPI(title="modelctl", version=__version__, docs_url=None, redoc_url=None,
                  description="A per-host model cache: native /v1 API, OpenAI-style "
                              "embeddings and Marqo's /models and /device routes.",
                  exception_handlers=EXCEPTION_HANDLERS)
    app.state.daemon = state
    for router in (routes_marqo.router, routes_native.router, embeddings.router,
                   routes_native.metrics_router):
        app.include_router(router, responses=ERROR_RESPONSES)
    return app
