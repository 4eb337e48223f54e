"""The whole server: the collector plus the query API and the dashboard.

``create_server(db, settings)`` builds the collector app (:func:`journeylens.server.app.create_app`,
which owns the writer thread) and adds

* ``/api/<analysis>`` — the query API (:mod:`journeylens.server.api`);
* ``/`` … — the dashboard pages (:mod:`journeylens.server.web`) and ``/static``;

and a :class:`~journeylens.server.api.QueryService` (``app.state.query``) with its
own pooled read connections to the same DuckDB file, closed before the writer stops.
With ``warm`` a :class:`~journeylens.server.warm.Warmer` (``app.state.warmer``) precomputes the
dashboard's default pages after every data change (docs/dashboard.md, "Performance").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from journeylens.server import api, auth, web
from journeylens.server.app import CollectorSettings, create_app
from journeylens.server.warm import Warmer, WarmSettings


def create_server(db: str, settings: CollectorSettings | None = None, *, pool_size: int = api.POOL_SIZE,
                  warm: bool | WarmSettings = False) -> FastAPI:
    """The collector of ``db`` with the query API and the dashboard mounted on it; ``warm`` (True or
    :class:`WarmSettings`) starts the cache warmer for every workspace with a read or admin key."""
    app = create_app(db, settings)
    app.title = "journeylens"
    app.description = ("Collector (Segment-compatible tracking API, pixel, links), query API over every "
                       "analysis (read key) and the dashboard.")
    service = api.QueryService(db, pool_size=pool_size)
    app.state.query = service
    app.state.web = web.WebState()
    warmer: Warmer | None = None
    if warm:
        def workspaces() -> list[str]:
            with service.workspace("default") as ws:
                recs = auth.list_keys(ws.store)  # type: ignore[arg-type]
            return sorted({r.workspace for r in recs if r.revoked_at is None and r.kind in ("read", "admin")})

        warmer = Warmer(service, workspaces, warm if isinstance(warm, WarmSettings) else None)
    app.state.warmer = warmer

    inner = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[Any]:
        async with inner(a) as state:
            if warmer is not None:
                warmer.start()
            try:
                yield state
            finally:
                if warmer is not None:
                    await asyncio.to_thread(warmer.stop)
                service.close()

    app.router.lifespan_context = lifespan

    @app.exception_handler(ValidationError)
    async def _invalid(_: Request, exc: ValidationError) -> JSONResponse:
        return api.error_response(exc)

    @app.exception_handler(api.ApiError)
    async def _api(_: Request, exc: api.ApiError) -> JSONResponse:
        return exc.response()

    app.include_router(api.router())
    web.mount(app)
    return app
