"""The collector: ``create_app(db)`` → a FastAPI app owning one DuckDB file.

Endpoints (see docs/collector.md):

* ``POST /v1/track|identify|page|screen|group|alias|batch`` and the
  analytics.js short paths ``/v1/t|i|p|s|g|a|b`` — Segment HTTP Tracking API;
* ``GET /t.gif`` tracking pixel, ``GET /r/{code}`` redirect / QR links;
* ``GET /healthz``, ``GET /metrics`` (Prometheus text);
* ``POST /api/keys``, ``DELETE /api/keys/{key_id}``, ``POST /api/links``
  (admin key), ``GET /api/people/{id}`` (read or admin key: export),
  ``DELETE /api/people/{id}`` (admin key: forget).

Answers: 200 ``{"success": true, "accepted", "duplicates", "quarantined":
[{"index", "reason"}], "not_stored": {"no_consent", "suppressed"}}`` only
after the transaction holding the request's rows committed; 400
``{"code", "message"}`` for unusable requests; 401/403 for keys; 503 with
``Retry-After`` when the writer queue is full or storage fails.
"""

from __future__ import annotations

import asyncio
import base64
import gc
import hmac
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from journeylens import config
from journeylens.errors import JourneylensError
from journeylens.ingest.readers import cap
from journeylens.server import auth, links, privacy
from journeylens.server.collect import (
    ENDPOINT_TYPES,
    BadRequest,
    Limits,
    Prepared,
    message_ids_of,
    prepare,
)
from journeylens.server.writer import Job, Outcome, QueueFull, StorageFailed, Writer
from journeylens.store.duckdb import DuckDBStore

GIF = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
"""A transparent 1x1 GIF."""

_MESSAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "type": {"type": "string"}, "event": {"type": "string"}, "userId": {"type": "string"},
        "anonymousId": {"type": "string"}, "messageId": {"type": "string"}, "timestamp": {"type": "string"},
        "sentAt": {"type": "string"}, "properties": {"type": "object"}, "traits": {"type": "object"},
        "context": {"type": "object"}, "groupId": {"type": "string"}, "previousId": {"type": "string"},
        "writeKey": {"type": "string"},
    },
}
_BATCH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"batch": {"type": "array", "items": _MESSAGE_SCHEMA}, "context": {"type": "object"},
                   "sentAt": {"type": "string"}, "writeKey": {"type": "string"}},
    "required": ["batch"],
}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    "200": {"description": "Stored (after COMMIT): counts of accepted, duplicate and quarantined messages."},
    "400": {"description": "Unusable request: {code, message}."},
    "401": {"description": "Missing, unknown, revoked or conflicting write key."},
    "403": {"description": "The key may not write."},
    "503": {"description": "Queue full or storage failing; retry after Retry-After seconds."},
}


@dataclass(frozen=True)
class CollectorSettings:
    """Everything configurable about the collector (defaults from :mod:`journeylens.config`)."""

    limits: Limits = field(default_factory=Limits)
    ip_mask: privacy.IpMask | None = field(default_factory=privacy.IpMask)
    commit_wait: float = 0.010
    commit_events: int = 5000
    queue_events: int = 100_000
    ack_timeout: float = 30.0
    retry_after: int = 2
    public_url: str = "http://localhost:8080"
    validate_workers: int = 2
    """Child processes that map and validate messages side by side (0: on the writer's validate thread)."""
    duckdb_threads: int | None = None
    """DuckDB threads of the database instance; None: 1 when the process serves only the collector (small
    group inserts cost about half the CPU on one thread), DuckDB's default (one per core) when the query API
    and dashboard (:func:`journeylens.server.site.create_server`, ``app.state.query``) share the instance."""
    tune_gc: bool = False
    """At start-up, move every object into the garbage collector's permanent generation
    (``gc.freeze()``) and collect less often, so full collections do not stall requests: for a
    process that serves only this app (``journeylens serve``, ``python -m journeylens.server``)."""

    @classmethod
    def from_config(cls, **overrides: Any) -> CollectorSettings:
        s = config.setting
        v4, v6 = int(s("collector_ip_prefix_v4")), int(s("collector_ip_prefix_v6"))
        base: dict[str, Any] = {
            "limits": Limits(max_event_bytes=int(s("collector_max_event_bytes")),
                             max_request_bytes=int(s("collector_max_request_bytes")),
                             body_timeout=float(s("collector_body_timeout"))),
            "ip_mask": None if (v4 >= 32 and v6 >= 128) else privacy.IpMask(v4, v6),
            "commit_wait": float(s("collector_commit_ms")) / 1000,
            "commit_events": int(s("collector_commit_events")),
            "queue_events": int(s("collector_queue_events")),
            "validate_workers": int(s("collector_validate_workers")),
        }
        base.update(overrides)
        return cls(**base)


class Counters:
    """Request-side counters for /metrics."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.no_consent = 0
        self.suppressed = 0
        self.rejected_requests = 0
        self.link_touches_lost = 0

    def status(self, code: int) -> None:
        k = str(code)
        self.requests[k] = self.requests.get(k, 0) + 1


class _State:
    def __init__(self, db: str, cfg: CollectorSettings) -> None:
        self.cfg = cfg
        self.keys = auth.KeyRing([])
        self.links: dict[str, links.Link] = {}
        self.suppressions: set[str] = set()
        self.counters = Counters()
        self.writer = Writer(db, max_wait=cfg.commit_wait, max_events=cfg.commit_events,
                             max_queue=cfg.queue_events, validate_workers=cfg.validate_workers, on_open=self._load)

    def _load(self, store: DuckDBStore) -> None:
        self.keys = auth.load_keys(store)
        self.links = {lk.code: lk for lk in links.list_links(store)}
        self.suppressions = privacy.load_suppressions(store)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message}, status_code=status, headers=headers)


class _TooLarge(Exception):
    pass


async def _read_body(request: Request, limit: int, parts: list[bytes]) -> bytes:
    """The request body (at most ``limit`` bytes, else :class:`_TooLarge`); ``parts`` keeps what
    arrived, for quarantining the partial body after a timeout."""
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        parts.append(chunk)
    return b"".join(parts)


def create_app(db: str, settings: CollectorSettings | None = None) -> FastAPI:
    """The collector app for the DuckDB file ``db`` (opened when the app starts)."""
    cfg = settings or CollectorSettings.from_config()
    st = _State(db, cfg)

    @asynccontextmanager
    async def lifespan(a: FastAPI) -> AsyncIterator[None]:
        threads = cfg.duckdb_threads
        if threads is None:
            threads = 0 if getattr(a.state, "query", None) is not None else 1
        st.writer.duckdb_threads = threads
        await asyncio.to_thread(st.writer.start)
        if cfg.tune_gc:  # no gc.collect() first: it would cost ~0.1-0.3 s of start-up
            gc.freeze()
            gc.set_threshold(20_000, 20, 20)
        try:
            yield
        finally:
            await asyncio.to_thread(st.writer.stop)

    app = FastAPI(title="journeylens collector", version="1", lifespan=lifespan,
                  description="Segment-compatible tracking API, pixel and redirect links.")
    app.state.collector = st
    fast_routes: dict[str, Callable[[Request], Any]] = {}
    app.add_middleware(_FastCollect, routes=fast_routes)  # inside CORS: CORS headers as for every route
    app.add_middleware(CORSMiddleware, allow_origins=["*"], allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
                       allow_headers=["*"], max_age=86400)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, "invalid_request", str(exc.errors()[:3])[:500])

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, "http_error", str(exc.detail))

    @app.exception_handler(JourneylensError)
    async def _jl(_: Request, exc: JourneylensError) -> JSONResponse:
        return JSONResponse(exc.to_dict(), status_code=exc.http_status)

    async def submit(job_args: dict[str, Any]) -> Outcome | JSONResponse:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()

        def done(result: Any) -> None:
            loop.call_soon_threadsafe(_settle, fut, result)

        retry = {"Retry-After": str(cfg.retry_after)}
        try:
            st.writer.submit(Job(done=done, **job_args))
        except QueueFull as exc:
            return _error(503, "queue_full", str(exc), retry)
        except StorageFailed as exc:
            return _error(503, "storage_unavailable", str(exc), retry)
        try:
            result = await asyncio.wait_for(asyncio.shield(fut), cfg.ack_timeout)
        except TimeoutError:
            return _error(503, "commit_timeout", "the commit did not finish in time; retry", retry)
        if isinstance(result, BaseException):
            return _error(503, "storage_unavailable", str(result)[:300], retry)
        assert isinstance(result, Outcome)
        return result

    def write_record(key: str | None) -> auth.KeyRecord | JSONResponse:
        rec = st.keys.lookup(key)
        if rec is None:
            return _error(401, "unauthorized", "unknown or revoked write key" if key else "a write key is needed "
                          "(HTTP Basic user or writeKey in the body)")
        if rec.kind not in ("write", "admin"):
            return _error(403, "forbidden", f"a {rec.kind} key cannot send events")
        return rec

    async def store_messages(rec: auth.KeyRecord, source: str, received: datetime,
                             prepared: Prepared) -> Outcome | JSONResponse:
        keep: list[tuple[int, dict[str, Any]]] = []
        suppressed = 0
        if not st.suppressions:  # nobody forgotten: nothing to look up
            keep = prepared.messages
        for index, msg in prepared.messages if st.suppressions else ():
            if privacy.suppressed(message_ids_of(msg), rec.workspace, st.suppressions):
                suppressed += 1
            else:
                keep.append((index, msg))
        st.counters.suppressed += suppressed
        prepared.suppressed = suppressed
        st.counters.no_consent += prepared.no_consent
        prepared.messages = keep
        if not keep and not prepared.quarantined:
            return Outcome()
        return await submit({"workspace": rec.workspace, "source": source, "received_at": received,
                             "messages": keep, "prequarantined": prepared.quarantined})

    async def collect(request: Request, endpoint: str) -> Response:
        received = datetime.now(UTC)
        header_key = auth.basic_user(request.headers.get("authorization"))
        source = f"http {request.url.path}"
        body = b""
        parts: list[bytes] = []
        try:
            try:
                body = await asyncio.wait_for(_read_body(request, cfg.limits.max_request_bytes, parts),
                                              cfg.limits.body_timeout)
            except _TooLarge as exc:
                raise BadRequest("request_too_large",
                                 f"request body larger than {cfg.limits.max_request_bytes} bytes") from exc
            except TimeoutError as exc:
                body = b"".join(parts)
                raise BadRequest("body_timeout", "the request body was not received in time") from exc
            from journeylens.server.collect import decode_body

            payload = decode_body(body, request.headers.get("content-encoding"),
                                  request.headers.get("content-type"), cfg.limits)
            prepared = prepare(payload, endpoint, received, cfg.limits, cfg.ip_mask)
        except BadRequest as exc:
            st.counters.rejected_requests += 1
            known = st.keys.lookup(header_key) if header_key else None
            if header_key and known is None:
                return _error(401, "unauthorized", "unknown or revoked write key")
            if known is not None and known.kind in ("write", "admin"):
                raw = body[:20_000].decode("utf-8", errors="replace")
                if cfg.ip_mask is not None:
                    raw = privacy.mask_ips_in_text(raw, cfg.ip_mask)
                job = Prepared(quarantined=[(-1, None, f"{exc.code}: {exc.message}"[:300], cap(raw))])
                stored = await store_messages(known, source, received, job)
                if isinstance(stored, JSONResponse):
                    return stored
            return _error(400, exc.code, exc.message)
        body_key = prepared.write_key
        if prepared.write_key_conflict or (
                header_key and body_key and not hmac.compare_digest(header_key.encode(), body_key.encode())):
            return _error(401, "write_key_mismatch", "the write key in the body differs from the one in the header")
        rec = write_record(header_key or body_key)
        if isinstance(rec, JSONResponse):
            return rec
        outcome = await store_messages(rec, source, received, prepared)
        if isinstance(outcome, JSONResponse):
            return outcome
        out = outcome.to_dict()
        out["not_stored"] = {"no_consent": prepared.no_consent, "suppressed": prepared.suppressed}
        return JSONResponse(out)

    def _collect_route(endpoint: str) -> Callable[[Request], Any]:
        async def route(request: Request) -> Response:
            resp = await collect(request, endpoint)
            st.counters.status(resp.status_code)
            return resp
        route.__name__ = f"collect_{endpoint}"
        return route

    for endpoint, kind in ENDPOINT_TYPES.items():
        fast_routes[f"/v1/{endpoint}"] = _collect_route(endpoint)
        app.add_api_route(
            f"/v1/{endpoint}", fast_routes[f"/v1/{endpoint}"], methods=["POST"], response_model=None,
            summary=f"Segment {kind} call" if kind != "batch" else "Segment batch of calls",
            tags=["tracking"], responses=_RESPONSES,
            openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                "schema": _BATCH_SCHEMA if kind == "batch" else _MESSAGE_SCHEMA}}}},
        )

    # ------------------------------------------------------------------ pixel
    @app.get("/t.gif", tags=["tracking"], response_model=None,
             summary="Tracking pixel: records a track (or page) call from query parameters; answers a 1x1 GIF")
    async def pixel(request: Request) -> Response:
        received = datetime.now(UTC)
        q = dict(request.query_params)
        key = q.pop("writeKey", None) or auth.basic_user(request.headers.get("authorization"))
        rec = write_record(key)
        gif = {"media_type": "image/gif", "headers": {"Cache-Control": "no-store, max-age=0"}}
        if isinstance(rec, JSONResponse):
            return Response(GIF, status_code=rec.status_code, **gif)  # type: ignore[arg-type]
        kind = q.pop("type", "track")
        if kind not in ("track", "page"):
            kind = "track"
        msg: dict[str, Any] = {"type": kind}
        for name in ("userId", "anonymousId", "messageId", "timestamp", "groupId"):
            if name in q:
                msg[name] = q.pop(name)
        msg["event" if kind == "track" else "name"] = q.pop("event", "pixel_view" if kind == "track" else None)
        campaign = {k.removeprefix("utm_").replace("campaign", "name"): q.pop(k)
                    for k in list(q) if k.startswith("utm_")}
        page = {k: q.pop(k) for k in ("url", "referrer") if k in q}
        msg["context"] = {"campaign": campaign, "page": page}
        msg["properties"] = q
        try:
            prepared = prepare(msg, kind, received, cfg.limits, cfg.ip_mask)
        except BadRequest:
            return Response(GIF, status_code=400, **gif)  # type: ignore[arg-type]
        outcome = await store_messages(rec, "http /t.gif", received, prepared)
        status = outcome.status_code if isinstance(outcome, JSONResponse) else 200
        st.counters.status(status)
        return Response(GIF, status_code=status, **gif)  # type: ignore[arg-type]

    # ------------------------------------------------------------------ links
    @app.get("/r/{code}", tags=["tracking"], response_model=None,
             summary="Redirect link: records a link_visit touch, then answers 302 to the target URL")
    async def redirect(code: str, request: Request) -> Response:
        received = datetime.now(UTC)
        link = st.links.get(code)
        if link is None:
            return _error(404, "unknown_link", f"no link with code '{code[:40]}'")
        aid = request.cookies.get("jl_aid") or ""
        if not (0 < len(aid) <= 100 and aid.replace("-", "").isalnum()):
            aid = str(uuid.uuid4())
        msg = links.link_message(link, aid, request.headers.get("referer"))
        prepared = prepare(msg, "track", received, cfg.limits, cfg.ip_mask)
        rec = auth.KeyRecord("link", link.workspace, "write", "", None, received)
        outcome = await store_messages(rec, f"http /r/{code}", received, prepared)
        if isinstance(outcome, JSONResponse):  # the visitor is redirected anyway
            st.counters.link_touches_lost += 1
        resp = RedirectResponse(links.target_url(link), status_code=302)
        resp.set_cookie("jl_aid", aid, max_age=365 * 86400, samesite="lax")
        st.counters.status(302)
        return resp

    # ------------------------------------------------------------------ health & metrics
    @app.get("/healthz", tags=["ops"], response_model=None, summary="Liveness: the writer runs")
    async def healthz() -> JSONResponse:
        ok = st.writer.alive
        return JSONResponse({"status": "ok" if ok else "unavailable", "queue": st.writer.depth},
                            status_code=200 if ok else 503)

    @app.get("/metrics", tags=["ops"], response_model=None, summary="Prometheus metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(_metrics_text(st), media_type="text/plain; version=0.0.4")

    # ------------------------------------------------------------------ admin / people
    def admin_record(request: Request, kinds: tuple[str, ...] = ("admin",)) -> auth.KeyRecord:
        rec = st.keys.lookup(auth.basic_user(request.headers.get("authorization")))
        if rec is None:
            raise StarletteHTTPException(401, "an admin key is needed (HTTP Basic user or Bearer)")
        if rec.kind not in kinds:
            raise StarletteHTTPException(403, f"a {rec.kind} key cannot do this")
        return rec

    async def on_writer(fn: Callable[[DuckDBStore], Any]) -> Any:
        try:
            return await st.writer.run(fn)
        except (QueueFull, StorageFailed) as exc:
            raise StarletteHTTPException(503, str(exc)) from exc

    @app.post("/api/keys", tags=["admin"], response_model=None, summary="Create a key in the admin's workspace")
    async def create_key(request: Request, body: dict[str, Any]) -> JSONResponse:
        rec = admin_record(request)
        kind = str(body.get("kind", "write"))
        label = body.get("label")
        made, key = await on_writer(lambda s: auth.create_key(s, rec.workspace, kind,
                                                              str(label) if label is not None else None))
        st.keys.add(made)
        return JSONResponse({**made.to_dict(), "key": key}, status_code=201)

    @app.delete("/api/keys/{key_id}", tags=["admin"], response_model=None, summary="Revoke a key (at once)")
    async def revoke_key(key_id: str, request: Request) -> JSONResponse:
        rec = admin_record(request)
        mine = await on_writer(lambda s: [r for r in auth.list_keys(s, rec.workspace) if r.key_id == key_id])
        if not mine:
            return _error(404, "unknown_key", f"no key '{key_id[:40]}' in this workspace")
        st.keys.revoke(key_id)
        done = await on_writer(lambda s: auth.revoke_key(s, key_id))
        return JSONResponse(done.to_dict())

    @app.post("/api/links", tags=["admin"], response_model=None, summary="Create a redirect / QR link")
    async def create_link(request: Request, body: dict[str, Any]) -> JSONResponse:
        rec = admin_record(request)
        args = {k: str(v) for k, v in body.items() if v is not None}
        touchpoint, url = args.pop("touchpoint", ""), args.pop("url", "")
        link = await on_writer(lambda s: links.create_link(s, rec.workspace, touchpoint, url, **args))
        st.links[link.code] = link
        return JSONResponse({**link.to_dict(), "link": f"{cfg.public_url.rstrip('/')}/r/{link.code}"},
                            status_code=201)

    @app.post("/api/cohorts", tags=["admin"], response_model=None,
              summary="Save a named cohort: given ids, or the units that dropped off at / converted to a funnel step")
    async def save_cohort(request: Request, body: dict[str, Any]) -> JSONResponse:
        """Body ``{"name", "people": [ids]}`` or ``{"name", "funnel": {FunnelQuery fields}, "step",
        "status": "dropped"|"converted", "breakdown_value"}``; replaces the cohort's members. The
        cohort is then a breakdown (``cohort:NAME``) and filter of every analysis."""
        rec = admin_record(request)
        return JSONResponse(await on_writer(lambda s: _save_cohort(s, rec.workspace, body)), status_code=201)

    @app.get("/api/people/{person}", tags=["people"], response_model=None,
             summary="Everything held about a person (GDPR export)")
    async def export_person(person: str, request: Request) -> JSONResponse:
        rec = admin_record(request, ("read", "admin"))
        data = await on_writer(lambda s: privacy.export_person(s, rec.workspace, person))
        return JSONResponse(_jsonable(data))

    @app.delete("/api/people/{person}", tags=["people"], response_model=None,
                summary="Forget a person (GDPR erasure) and suppress their later events")
    async def forget_person(person: str, request: Request) -> JSONResponse:
        rec = admin_record(request)
        report = await on_writer(lambda s: privacy.forget(s, rec.workspace, person))
        st.suppressions |= {privacy.suppression_hash(rec.workspace, i) for i in report.ids}
        return JSONResponse(report.to_dict())

    return app


def _save_cohort(store: DuckDBStore, workspace: str, body: dict[str, Any]) -> dict[str, Any]:
    """``POST /api/cohorts`` on the commit thread (see the route)."""
    from journeylens.analyses.funnel import STATUSES, FunnelQuery, step_ref
    from journeylens.errors import InvalidParameterError
    from journeylens.workspace import Workspace

    ws = Workspace(store, workspace)
    name = str(body.get("name") or "").strip()
    if not name:
        raise InvalidParameterError("a cohort needs a 'name'")
    if "funnel" in body:
        spec, step, status = body["funnel"], body.get("step"), str(body.get("status") or "dropped")
        if not isinstance(spec, dict) or step is None or status not in STATUSES:
            raise InvalidParameterError("'funnel' needs the funnel's fields, 'step' (index or name) and 'status' "
                                        "dropped or converted", hint='e.g. {"name": "abandoners", "funnel": '
                                        '{"steps": ["visit", "purchase"], "window": "7d"}, "step": 2}')
        value = body.get("breakdown_value")
        found = ws.save_funnel_cohort(name, FunnelQuery(**spec), step_ref(step), status,  # type: ignore[arg-type]
                                      breakdown_value=None if value is None else str(value))
        return found.to_dict()
    people = body.get("people")
    if not isinstance(people, list) or not all(isinstance(p, str | int) for p in people):
        raise InvalidParameterError("give 'people' (a list of ids) or 'funnel' with 'step' and 'status'")
    count = ws.save_cohort(name, [str(p) for p in people], definition={"source": "api"})
    return {"cohort": name, "count": count}


class _FastCollect:
    """ASGI middleware: ``POST /v1/<endpoint>`` goes straight to its collector handler, without the router,
    FastAPI's request handling (dependencies, exception middleware, exit stacks): ~25 % of the event loop's
    CPU per tracking request. The handlers are the ones registered as FastAPI routes, which stay for the
    OpenAPI schema and for every other method; an error raised by a handler reaches the server-error
    middleware as before (a 500)."""

    def __init__(self, app: Any, routes: dict[str, Callable[[Request], Any]]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            route = self.routes.get(scope["path"])
            if route is not None:
                response = await route(Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _settle(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.done():
        fut.set_result(result)


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    return value


def _metrics_text(st: _State) -> str:
    w = st.writer.stats
    c = st.counters
    lines = [
        "# HELP journeylens_events_accepted_total Messages stored.",
        "# TYPE journeylens_events_accepted_total counter",
        f"journeylens_events_accepted_total {w.accepted}",
        "# HELP journeylens_events_duplicates_total Messages whose (workspace, messageId) was stored already.",
        "# TYPE journeylens_events_duplicates_total counter",
        f"journeylens_events_duplicates_total {w.duplicates}",
        "# HELP journeylens_events_quarantined_total Messages or request bodies quarantined.",
        "# TYPE journeylens_events_quarantined_total counter",
        f"journeylens_events_quarantined_total {w.quarantined}",
        "# HELP journeylens_events_not_stored_total Messages dropped by privacy rules.",
        "# TYPE journeylens_events_not_stored_total counter",
        f'journeylens_events_not_stored_total{{reason="no_consent"}} {c.no_consent}',
        f'journeylens_events_not_stored_total{{reason="suppressed"}} {c.suppressed}',
        "# HELP journeylens_requests_total Answered requests by status code.",
        "# TYPE journeylens_requests_total counter",
        *[f'journeylens_requests_total{{status="{k}"}} {v}' for k, v in sorted(c.requests.items())],
        "# HELP journeylens_queue_depth Messages waiting for the writer.",
        "# TYPE journeylens_queue_depth gauge",
        f"journeylens_queue_depth {st.writer.depth}",
        "# HELP journeylens_commit_failures_total Group commits that failed.",
        "# TYPE journeylens_commit_failures_total counter",
        f"journeylens_commit_failures_total {w.commit_failures}",
        "# HELP journeylens_commit_seconds Duration of group commits (validate + transaction).",
        "# TYPE journeylens_commit_seconds histogram",
    ]
    for b, n in zip(w.buckets, w.bucket_counts, strict=True):
        lines.append(f'journeylens_commit_seconds_bucket{{le="{b}"}} {n}')
    lines += [f'journeylens_commit_seconds_bucket{{le="+Inf"}} {w.commits}',
              f"journeylens_commit_seconds_sum {w.commit_seconds_sum:.6f}",
              f"journeylens_commit_seconds_count {w.commits}",
              "# HELP journeylens_validate_seconds_total Time spent mapping and validating groups.",
              "# TYPE journeylens_validate_seconds_total counter",
              f"journeylens_validate_seconds_total {w.validate_seconds_sum:.6f}",
              "# HELP journeylens_transaction_seconds_total Time spent in the insert transactions (incl. COMMIT).",
              "# TYPE journeylens_transaction_seconds_total counter",
              f"journeylens_transaction_seconds_total {w.transaction_seconds_sum:.6f}",
              f"journeylens_uptime_seconds {time.monotonic() - _STARTED:.1f}"]
    return "\n".join(lines) + "\n"


_STARTED = time.monotonic()
