"""The dashboard: server-rendered Jinja2 pages with Plotly charts (docs/dashboard.md).

Pages call the same :class:`~journeylens.server.api.QueryService` as the query API
(same request models, same cache), so a number on a page always equals the API's.
Every asset (CSS, JS, plotly.min.js from the ``plotly`` package) is served locally
under ``/static``.

Login: a read or admin key posted to ``/login`` gives a session cookie
``jl_session`` = base64url(JSON ``{k: key id, w: workspace, e: expiry, c: nonce}``)
``.`` base64url(HMAC-SHA256(secret, payload)); the secret is 32 random bytes kept in
``journeylens_meta`` (key ``dashboard_secret``), created by the writer on first use. A
session is valid while unexpired (8 h) and while its key is active (revoking the key
ends it). Every POST form carries a CSRF token HMAC(secret, "csrf:" + nonce) where the
nonce is the session's (or, on the login form, the ``jl_pre`` cookie's).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import html
import json
import logging
import secrets
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import plotly
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from journeylens.errors import JourneylensError
from journeylens.journey import builtin_models
from journeylens.server import auth
from journeylens.server.api import ANALYSES, Computed, QueryService

log = logging.getLogger("journeylens.web")
HERE = Path(__file__).parent
PLOTLY_JS = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
SESSION_COOKIE = "jl_session"
PRE_COOKIE = "jl_pre"
SESSION_SECONDS = 8 * 3600
SECRET_META_KEY = "dashboard_secret"
BREAKDOWNS = ("channel", "touchpoint", "utm_source", "utm_campaign", "stage")
NAV = (
    ("/", "Overview"), ("/funnel", "Funnel"), ("/paths", "Paths"), ("/stages", "Stages & KPIs"),
    ("/attribution", "Attribution"), ("/retention", "Retention"), ("/clv", "Customer value"),
    ("/surveys", "Surveys"), ("/personas", "Personas"), ("/painpoints", "Pain points"),
    ("/experiment", "Experiment"), ("/map", "Journey map"), ("/person", "Person"), ("/settings", "Settings"),
)
VARIANT_EXAMPLES = ("properties.variant", "properties.experiment", "trait:test_group", "trait:gender",
                    "trait:device")
"""Suggestions of the experiment page's variant field (any ``properties.KEY`` / ``trait:KEY`` works)."""
COVARIATE_EXAMPLES = ("pre", "pre:purchase", "pre:visit", "trait:age")


@dataclass(frozen=True)
class Saved:
    """Saved personas (keys), other saved cohorts and the months of data of a workspace: the
    choices of segment and scope pickers (from ``/api/cohorts``)."""

    personas: tuple[str, ...] = ()
    cohorts: tuple[str, ...] = ()
    months: tuple[str, ...] = ()

    def breakdowns(self) -> list[tuple[str, str]]:
        """Segment breakdowns to offer beside the columns: ``persona`` / ``cohort`` when saved."""
        out = [("persona", "persona (saved personas)")] if self.personas else []
        return out + ([("cohort", "cohort (saved cohorts)")] if self.cohorts else [])


# ============================================================================ sessions
@dataclass
class WebState:
    """Per-server dashboard state: the signing secret (loaded on first request)."""

    secret: bytes | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())


def make_session(secret: bytes, rec: auth.KeyRecord, now: float | None = None) -> str:
    """The signed cookie value of a session for key ``rec``."""
    body = {"k": rec.key_id, "w": rec.workspace, "e": int((now or time.time()) + SESSION_SECONDS),
            "c": secrets.token_urlsafe(12)}
    payload = _b64(json.dumps(body, separators=(",", ":")).encode())
    return f"{payload}.{_sign(secret, payload)}"


def read_session(secret: bytes, value: str | None, now: float | None = None) -> dict[str, Any] | None:
    """The session body when ``value`` is correctly signed and unexpired, else None."""
    if not value or value.count(".") != 1:
        return None
    payload, sig = value.split(".")
    if not hmac.compare_digest(sig, _sign(secret, payload)):
        return None
    try:
        body = json.loads(_unb64(payload))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(body, dict) or int(body.get("e", 0)) < (now or time.time()):
        return None
    return body


def csrf_token(secret: bytes, nonce: str) -> str:
    return _sign(secret, "csrf:" + nonce)[:32]


def _active_key(ring: auth.KeyRing, key_id: str) -> auth.KeyRecord | None:
    records: dict[str, auth.KeyRecord] = getattr(ring, "_by_hash", {})  # KeyRing has no lookup by id
    return next((r for r in records.values() if r.key_id == key_id), None)


def session_record(request: Request) -> auth.KeyRecord | None:
    """The active key of the request's session cookie, or None."""
    state: WebState | None = getattr(request.app.state, "web", None)
    if state is None or state.secret is None:
        return None
    body = read_session(state.secret, request.cookies.get(SESSION_COOKIE))
    if body is None:
        return None
    rec = _active_key(request.app.state.collector.keys, str(body.get("k")))
    if rec is None or rec.workspace != body.get("w"):
        return None
    return rec


async def ensure_secret(app: FastAPI) -> bytes:
    """The dashboard secret, read from (or first written to) ``journeylens_meta`` by the writer."""
    state: WebState = app.state.web
    if state.secret is not None:
        return state.secret
    async with state.lock:
        if state.secret is None:
            def load(store: Any) -> str:
                meta = store.meta()
                if SECRET_META_KEY not in meta:
                    store.set_meta(SECRET_META_KEY, secrets.token_hex(32))
                    meta = store.meta()
                return str(meta[SECRET_META_KEY])

            state.secret = bytes.fromhex(await app.state.collector.writer.run(load))
    return state.secret


# ============================================================================ rendering helpers
_env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(["j2", "html"]))


def _fmt(value: Any) -> str:
    """A number or text for a table cell / card."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:
            return "–"
        if abs(value) < 1 and value != 0:
            return f"{value:.1%}"
        return f"{value:,.2f}"
    return str(value)


def _pct(value: Any) -> str:
    return "–" if value is None else f"{float(value):.1%}"


_env.filters["fmt"] = _fmt
_env.filters["pct"] = _pct


def _script_json(text: str) -> Markup:
    """JSON safe inside a <script type=application/json> element."""
    return Markup(text.replace("</", "<\\/").replace("<!--", "<\\!--"))


class Page:
    """What a page shows: a form of pickers and a list of blocks (cards, charts, tables, html)."""

    def __init__(self, title: str, path: str) -> None:
        self.title = title
        self.path = path
        self.form: list[dict[str, Any]] = []
        self.blocks: list[dict[str, Any]] = []
        self.error: str | None = None
        self.status = 200
        self.timing: list[str] = []
        self.form_action = path
        self.csrf = ""

    def field(self, name: str, label: str, value: Any = "", kind: str = "text", options: Any = (),
              suggestions: Any = (), **extra: Any) -> None:
        """A picker: ``kind`` text / number / select (``options``: values or (value, label)) /
        steps; a text field offers ``suggestions`` (a datalist) but accepts anything."""
        self.form.append({"name": name, "label": label, "value": "" if value is None else value, "kind": kind,
                          "options": [(o, o) if isinstance(o, str) else o for o in options],
                          "suggestions": [str(x) for x in suggestions], **extra})

    def cards(self, items: list[tuple[str, Any, str]]) -> None:
        self.blocks.append({"type": "cards", "items": [{"label": a, "value": _fmt(b), "raw": b, "testid": c}
                                                       for a, b, c in items]})

    def chart(self, figure: str | None, testid: str, title: str = "", click: str | None = None) -> None:
        if figure:
            self.blocks.append({"type": "chart", "figure": _script_json(figure), "testid": testid, "title": title,
                                "click": click, "id": f"chart-{len(self.blocks)}"})

    def figure(self, fig: Any, testid: str, title: str = "") -> None:
        self.chart(fig.to_json(), testid, title)

    def table(self, title: str, rows: list[dict[str, Any]], columns: list[str] | None = None, testid: str = "",
              links: dict[str, str] | None = None, limit: int = 200) -> None:
        """``rows`` as a table of their scalar ``columns``; ``links`` maps a column to an href
        template with ``{value}`` (URL-quoted)."""
        if columns is None:
            columns = [k for k, v in (rows[0].items() if rows else []) if not isinstance(v, dict | list)]
        body = []
        for r in rows[:limit]:
            cells = []
            for c in columns:
                v = r.get(c)
                href = None
                if links and c in links and v is not None:
                    href = links[c].format(value=urlencode({"v": v})[2:], **{k: r.get(k) for k in r})
                ratio = isinstance(v, float) and any(w in c for w in ("conversion", "share", "rate", "probability"))
                cells.append({"text": _pct(v) if ratio else _fmt(v), "href": href, "num": isinstance(v, int | float)})
            body.append(cells)
        self.blocks.append({"type": "table", "title": title, "columns": columns, "rows": body, "testid": testid,
                            "more": max(0, len(rows) - limit)})

    def html(self, content: str) -> None:
        self.blocks.append({"type": "html", "html": Markup(content)})

    def note(self, text: str) -> None:
        self.blocks.append({"type": "note", "text": text})


def _params(request: Request) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in request.query_params.multi_items():
        out.setdefault(k, []).append(v)
    return out


def _one(p: dict[str, list[str]], name: str, default: str = "") -> str:
    v = p.get(name)
    return v[-1].strip() if v else default


def _models() -> list[str]:
    return sorted(builtin_models())


# ============================================================================ page queries
# What each page computes, as ``analysis -> parameters`` built from the page's query string
# (``{}`` = the page opened without parameters). The pages and the cache warmer
# (server/warm.py, via :func:`default_page_queries`) both read these, so a page's cache keys
# and the warmed ones cannot drift apart.
Params = dict[str, list[str]]
FUNNEL_STEPS = ("visit", "product_view", "add_to_cart", "purchase")
ATTRIBUTION_METHODS = ("first_touch", "last_touch", "linear", "time_decay", "position_based", "markov")
MAP_KEYS = ("model", "persona", "segment", "period", "compare_persona", "compare_segment", "compare_period", "unit")


def overview_queries(p: Params) -> dict[str, dict[str, Any]]:
    model = _one(p, "model") or None
    return {"overview": {"model": model}, "stages": {"model": model},
            "lifecycle": {"model": model, "period": "week"}}


def funnel_queries(p: Params) -> dict[str, dict[str, Any]]:
    steps = [s.strip() for s in p.get("steps", []) if s.strip()] or list(FUNNEL_STEPS)
    trend = _one(p, "trend_period", "week")
    return {"funnel": {"steps": steps, "window": _one(p, "window", "14d"), "order": _one(p, "order", "ordered"),
                       "breakdown": _one(p, "breakdown") or None, "trend_period": trend or None,
                       "model": _one(p, "model") or None}}


def paths_queries(p: Params) -> dict[str, dict[str, Any]]:
    return {"paths": {"level": _one(p, "level", "event"), "from": _one(p, "from") or None, "to": _one(p, "to") or None,
                      "depth": _one(p, "depth", "5"), "start_end_nodes": _one(p, "start_end_nodes", "true") == "true",
                      "model": _one(p, "model") or None}}


def stages_queries(p: Params) -> dict[str, dict[str, Any]]:
    model, by, unit = _one(p, "model") or None, _one(p, "by"), _one(p, "unit", "person")
    return {"stages": {"model": model, "unit": unit, "breakdown": by or None},
            "kpis": {"model": model, "unit": unit, "period": _one(p, "period") or None, "by": by or None}}


def attribution_queries(p: Params) -> dict[str, dict[str, Any]]:
    return {"attribution": {"level": _one(p, "level", "channel"), "conversion": _one(p, "conversion", "purchase"),
                            "lookback": _one(p, "lookback", "30d"),
                            "methods": p.get("methods") or list(ATTRIBUTION_METHODS)}}


def retention_queries(p: Params) -> dict[str, dict[str, Any]]:
    return {"retention": {"period": _one(p, "period", "week"), "start_event": _one(p, "start_event") or None,
                          "return_event": _one(p, "return_event") or None,
                          "breakdown": _one(p, "breakdown") or None}}


def clv_queries(p: Params) -> dict[str, dict[str, Any]]:
    return {"clv": {"horizon": _one(p, "horizon", "12"), "top": 25}}


def surveys_queries(p: Params) -> dict[str, dict[str, Any]]:
    return {"surveys": {"model": _one(p, "model") or None}}


def personas_queries(p: Params) -> dict[str, dict[str, Any]]:
    return {"personas": {"k": _one(p, "k") or None}}


def painpoints_queries(p: Params) -> dict[str, dict[str, Any]]:
    model = _one(p, "model") or None
    return {"painpoints": {"model": model}, "moments": {"model": model, "by": "touchpoint"}}


def map_params(p: Params) -> dict[str, Any]:
    return {k: _one(p, k) or None for k in MAP_KEYS}


def map_queries(p: Params) -> dict[str, dict[str, Any]]:
    return {"map": map_params(p)}


def settings_queries(p: Params) -> dict[str, dict[str, Any]]:
    return {"quarantine": {"newest": 50}}


PAGE_QUERIES: tuple[tuple[str, Any, bool], ...] = (
    ("/", overview_queries, False),
    ("/funnel", funnel_queries, True),
    ("/paths", paths_queries, False),
    ("/stages", stages_queries, True),
    ("/attribution", attribution_queries, False),
    ("/retention", retention_queries, True),
    ("/clv", clv_queries, False),
    ("/surveys", surveys_queries, False),
    ("/personas", personas_queries, False),
    ("/painpoints", painpoints_queries, False),
    ("/map", map_queries, True),
    ("/settings", settings_queries, False),
)
"""``(page, query builder, lists saved cohorts)`` of the pages with default views."""


def compact(params: dict[str, Any]) -> dict[str, Any]:
    """``params`` without empty values, as a page hands them to ``QueryService.compute``."""
    return {k: v for k, v in params.items() if v not in (None, "", [])}


def default_page_queries() -> tuple[tuple[str, str, dict[str, Any]], ...]:
    """``(page, analysis, parameters)`` of every page opened without parameters, in page order,
    each analysis and parameters once: exactly what the pages compute (``cohorts`` for the
    persona / cohort pickers of the pages that have them)."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    seen: set[str] = set()
    for page, build, lists_saved in PAGE_QUERIES:
        queries: dict[str, dict[str, Any]] = {"cohorts": {}} if lists_saved else {}
        queries.update(build({}))
        for name, params in queries.items():
            key = json.dumps([name, compact(params)], sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                out.append((page, name, compact(params)))
    return tuple(out)


# ============================================================================ app wiring
def mount(app: FastAPI) -> None:
    """Add the dashboard routes and ``/static`` to ``app``."""
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.get("/vendor/plotly.min.js", include_in_schema=False)
    async def plotly_js() -> FileResponse:
        return FileResponse(PLOTLY_JS, media_type="application/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})

    @app.middleware("http")
    async def _secret(request: Request, call_next: Any) -> Response:
        path = request.url.path
        if request.app.state.web.secret is None and not path.startswith(("/v1/", "/t.gif", "/r/", "/healthz",
                                                                          "/metrics", "/static", "/vendor")):
            with contextlib.suppress(Exception):  # writer not running: sessions are simply not accepted
                await ensure_secret(request.app)
        response: Response = await call_next(request)
        return response

    def render(request: Request, page: Page, rec: auth.KeyRecord) -> HTMLResponse:
        text = _env.get_template("page.html.j2").render(page=page, nav=NAV, rec=rec, csrf=page.csrf,
                                                        current=page.path)
        return HTMLResponse(text, status_code=page.status)

    def login_redirect(request: Request) -> RedirectResponse:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse("/login?" + urlencode({"next": target}), status_code=303)

    async def data_version(request: Request, rec: auth.KeyRecord) -> str:
        """The workspace's data version, read once per request for all analyses of a page."""
        version: str | None = getattr(request.state, "data_version", None)
        if version is None:
            svc: QueryService = request.app.state.query
            version = await run_in_threadpool(svc.version, rec.workspace)
            request.state.data_version = version
        return version

    async def compute(request: Request, page: Page, rec: auth.KeyRecord, name: str,
                      params: dict[str, Any]) -> Computed | None:
        svc: QueryService = request.app.state.query
        try:
            version = await data_version(request, rec)
            done = await run_in_threadpool(svc.compute, rec.workspace, ANALYSES[name], compact(params),
                                           version=version)
        except JourneylensError as exc:
            page.error, page.status = str(exc), exc.http_status
            return None
        except ValidationError as exc:
            page.error, page.status = f"invalid parameters: {exc.errors()[0].get('msg')}", 400
            return None
        except Exception as exc:  # a failing analysis shows as an error box; the rest of the page renders
            log.exception("analysis %s failed", name)
            page.error, page.status = f"{name} failed: {type(exc).__name__}: {str(exc)[:300]}", 500
            return None
        page.timing.append(f"{name} {done.seconds:.2f}s{' (cached)' if done.cached else ''}")
        return done

    async def compute_all(request: Request, page: Page, rec: auth.KeyRecord,
                          queries: Mapping[str, dict[str, Any]]) -> list[Computed | None]:
        """:func:`compute` of several analyses of one page at once (each on its own pooled
        connection, so a page with three analyses costs about its slowest one); in order."""
        await data_version(request, rec)  # read once, before the analyses start
        return list(await asyncio.gather(*(compute(request, page, rec, name, params)
                                           for name, params in queries.items())))

    async def saved(request: Request, page: Page, rec: auth.KeyRecord) -> Saved:
        """The workspace's saved personas, cohorts and months (errors leave the pickers plain)."""
        svc: QueryService = request.app.state.query
        try:
            version = await data_version(request, rec)
            done = await run_in_threadpool(svc.compute, rec.workspace, ANALYSES["cohorts"], {}, version=version)
        except Exception:  # the pickers then offer only the columns
            log.exception("listing cohorts failed")
            return Saved()
        d = done.data
        return Saved(personas=tuple(str(x["key"]) for x in d.get("personas", [])),
                     cohorts=tuple(str(x["name"]) for x in d.get("cohorts", []) if x.get("persona") is None),
                     months=tuple(str(m) for m in d.get("months", [])))

    def page_route(path: str, title: str) -> Any:
        def decorate(fn: Any) -> Any:
            async def endpoint(request: Request) -> Response:
                rec = session_record(request)
                if rec is None or rec.kind not in ("read", "admin"):
                    return login_redirect(request)
                page = Page(title, path)
                body = read_session(request.app.state.web.secret, request.cookies.get(SESSION_COOKIE)) or {}
                page.csrf = csrf_token(request.app.state.web.secret, str(body.get("c", "")))
                out = await fn(request, page, rec)
                if isinstance(out, Response):
                    return out
                return render(request, page, rec)
            endpoint.__name__ = "page_" + (path.strip("/").replace("/", "_").replace("{", "").replace("}", "")
                                           or "overview")
            app.add_api_route(path, endpoint, methods=["GET"], include_in_schema=False, response_model=None)
            return fn
        return decorate

    # ------------------------------------------------------------------ login / logout
    @app.get("/login", include_in_schema=False, response_model=None)
    async def login_form(request: Request, next: str = "/", error: str = "") -> Response:
        secret = await ensure_secret(request.app)
        nonce = request.cookies.get(PRE_COOKIE) or secrets.token_urlsafe(12)
        text = _env.get_template("login.html.j2").render(csrf=csrf_token(secret, nonce), next=_safe_next(next),
                                                         error=error)
        resp = HTMLResponse(text, status_code=400 if error else 200)
        resp.set_cookie(PRE_COOKIE, nonce, httponly=True, samesite="strict", max_age=3600)
        return resp

    @app.post("/login", include_in_schema=False, response_model=None)
    async def login(request: Request) -> Response:
        secret = await ensure_secret(request.app)
        form = await _form(request)
        nxt = _safe_next(form.get("next", "/"))
        if not hmac.compare_digest(form.get("csrf", ""), csrf_token(secret, request.cookies.get(PRE_COOKIE, ""))):
            return HTMLResponse("CSRF check failed: reload the login page", status_code=403)
        rec = request.app.state.collector.keys.lookup(form.get("key", "").strip())
        if rec is None or rec.kind not in ("read", "admin"):
            why = "unknown or revoked key" if rec is None else f"a {rec.kind} key cannot open the dashboard"
            return RedirectResponse("/login?" + urlencode({"next": nxt, "error": why}), status_code=303)
        resp = RedirectResponse(nxt, status_code=303)
        resp.set_cookie(SESSION_COOKIE, make_session(secret, rec), httponly=True, samesite="lax",
                        max_age=SESSION_SECONDS)
        resp.delete_cookie(PRE_COOKIE)
        return resp

    @app.post("/logout", include_in_schema=False, response_model=None)
    async def logout(request: Request) -> Response:
        secret = await ensure_secret(request.app)
        form = await _form(request)
        body = read_session(secret, request.cookies.get(SESSION_COOKIE)) or {}
        if not hmac.compare_digest(form.get("csrf", ""), csrf_token(secret, str(body.get("c", "")))):
            return HTMLResponse("CSRF check failed", status_code=403)
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE)
        return resp

    # ------------------------------------------------------------------ overview
    @page_route("/", "Overview")
    async def overview(request: Request, page: Page, rec: auth.KeyRecord) -> None:
        p = _params(request)
        model = _one(p, "model") or None
        page.field("model", "Journey model", model or "", "select", [("", "default"), *_models()])
        q = overview_queries(p)
        ov, st, lc = await compute_all(request, page, rec, q)
        if ov is None:
            return
        d = ov.data
        page.cards([("People", d["people"], "people"), ("Identified people", d["identified_people"], "identified"),
                    ("Events", d["events"], "events"), ("Touches", d["touches"], "touches")])
        page.note(f"Data from {str(d['first_ts'])[:10]} to {str(d['last_ts'])[:10]}.")
        if st is not None:
            page.chart(st.figure, "stage-funnel", "Stage funnel")
        page.chart(ov.figure, "channels", "Top channels")
        if lc is not None:
            page.chart(lc.figure, "trend", "People per week: new, returning, resurrecting, dormant")
        page.table("Top channels", d["channels"], ["channel", "people", "touches", "share_of_touches"],
                   testid="channels-table")

    # ------------------------------------------------------------------ funnel
    @page_route("/funnel", "Funnel builder")
    async def funnel_page(request: Request, page: Page, rec: auth.KeyRecord) -> None:
        p = _params(request)
        steps = [s.strip() for s in p.get("steps", []) if s.strip()] or list(FUNNEL_STEPS)
        window, order = _one(p, "window", "14d"), _one(p, "order", "ordered")
        breakdown, trend = _one(p, "breakdown"), _one(p, "trend_period", "week")
        model = _one(p, "model") or None
        page.field("steps", "Steps (event or filter, in order)", [*steps, ""], "steps")
        page.field("window", "Window", window)
        page.field("order", "Order", order, "select", ("ordered", "strict", "unordered"))
        sv = await saved(request, page, rec)
        page.field("breakdown", "Breakdown", breakdown, "select", [("", "none"), *BREAKDOWNS, *sv.breakdowns()])
        page.field("trend_period", "Trend", trend, "select", [("", "none"), "day", "week", "month"])
        page.field("model", "Journey model", model or "", "select", [("", "default"), *_models()])
        params = funnel_queries(p)["funnel"]
        done = await compute(request, page, rec, "funnel", params)
        if done is None:
            return
        d = done.data
        first, last = d["steps"][0], d["steps"][-1]
        page.cards([("Entered", first["persons"], "funnel-entered"), ("Converted", last["persons"], "funnel-converted"),
                    ("Conversion", last["conversion_from_start"], "funnel-conversion"),
                    ("Median time to convert", _duration(last["median_seconds_to_convert"]), "funnel-median")])
        base = {k: v for k, v in params.items() if v not in (None, "")}
        drop = "/funnel/dropoff?" + urlencode({**base, "step": "STEP"}, doseq=True)
        page.chart(done.figure, "funnel-chart", "Units per step (click a bar to see who dropped off there)", click=drop)
        rows = [{**s, "median": _duration(s["median_seconds_to_convert"]),
                 "dropped off": s["drop_offs"] if s["index"] > 1 else None} for s in d["steps"]]
        page.table("Steps", rows, ["index", "step", "persons", "conversion_from_start", "conversion_from_previous",
                                   "dropped off", "median"], testid="funnel-steps",
                   links={"dropped off": drop.replace("STEP", "{index}")})
        if last.get("histogram"):
            page.figure(_histogram(last), "funnel-histogram", "Time to convert")
        if d.get("trend"):
            page.figure(_trend(d["trend"]["rows"]), "funnel-trend", "Conversion by entry period")
        if d.get("breakdown"):
            rows = [{"value": b["value"], "entered": b["steps"][0]["persons"], "converted": b["steps"][-1]["persons"],
                     "conversion": b["steps"][-1]["conversion_from_start"]} for b in d["breakdown"]["values"]]
            page.table(f"By {d['breakdown']['by']}", rows, testid="funnel-breakdown")

    @page_route("/funnel/dropoff", "Who dropped off")
    async def dropoff(request: Request, page: Page, rec: auth.KeyRecord) -> None:
        p = _params(request)
        params: dict[str, Any] = {k: (v if k == "steps" else v[-1]) for k, v in p.items()}
        step = str(params.get("step", "2"))
        page.field("step", "Step", step)
        people = await compute(request, page, rec, "funnel/people", {**params, "status": "dropped"})
        paths = await compute(request, page, rec, "funnel/paths", {**params, "position": "dropped"})
        if people is None:
            return
        d = people.data
        page.cards([(f"Dropped off before '{d['step_name']}'", d["count"], "dropoff-count")])
        if paths is not None:
            page.chart(paths.figure, "dropoff-sankey", "Their paths after the previous step")
            page.table("Their top paths", paths.data.get("paths", []), ["path", "persons", "share"],
                       testid="dropoff-paths")
        page.table("People", [{"person": x} for x in d["people"]], ["person"], testid="dropoff-people",
                   links={"person": "/person/{value}"}, limit=100)

    # ------------------------------------------------------------------ paths
    @page_route("/paths", "Paths")
    async def paths_page(request: Request, page: Page, rec: auth.KeyRecord) -> None:
        p = _params(request)
        level, frm, to = _one(p, "level", "event"), _one(p, "from"), _one(p, "to")
        depth = _one(p, "depth", "5")
        anchors = _one(p, "start_end_nodes", "true")
        model = _one(p, "model") or None
        page.field("level", "Level", level, "select", ("event", "touchpoint", "channel", "stage"))
        page.field("from", "Start at (step)", frm)
        page.field("to", "End at (step)", to)
        page.field("depth", "Depth", depth, "number")
        page.field("start_end_nodes", "Start/end nodes", anchors, "select", ("true", "false"))
        page.field("model", "Journey model", model or "", "select", [("", "default"), *_models()])
        done = await compute(request, page, rec, "paths", paths_queries(p)["paths"])
        if done is None:
            return
        d = done.data
        page.cards([("People", d["persons"], "paths-persons"), ("Distinct paths", d["distinct_paths"], "paths-distinct")])
        page.chart(done.figure, "sankey", "Sankey")
        page.table("Top paths", d["paths"], ["path", "persons", "share"], testid="paths-table")

    # ------------------------------------------------------------------ stages & KPIs
    @page_route("/stages", "Stages and KPIs")
    async def stages_page(request: Request, page: Page, rec: auth.KeyRecord) -> None:
        p = _params(request)
        model = _one(p, "model") or None
        period, by, unit = _one(p, "period"), _one(p, "by"), _one(p, "unit", "person")
        page.field("model", "Journey model", model or "", "select", [("", "default"), *_models()])
        page.field("period", "Period", period, "select", [("", "all time"), "week", "month", "quarter"])
        sv = await saved(request, page, rec)
        page.field("by", "Breakdown", by, "select", [("", "none"), "channel", "touchpoint", "utm_campaign",
                                                     *sv.breakdowns()])
        page.field("unit", "Unit", unit, "select", ("person", "account"))
        q = stages_queries(p)
        st, k = await compute_all(request, page, rec, q)
        if st is None:
            return
        d = st.data
        page.cards([("Model", d["model"], "stages-model"), (f"{unit.capitalize()}s", d["total_units"], "stages-total")])
        page.chart(st.figure, "stage-funnel", "Stage funnel")
        page.table("Stages", d["stages"], testid="stages-table")
        if d.get("breakdown"):
            page.table(f"Stages by {by}", _stage_breakdown_rows(d), testid="stages-breakdown")
        if k is None:
            return
        page.chart(k.figure, "kpis-chart", "KPIs")
        rows = []
        for s in k.data["stages"]:
            if "kpis" in s:
                rows.append({"stage": s["stage"], **{kk: v for kk, v in s["kpis"].items()}})
            else:
                rows.append({kk: v for kk, v in s.items() if not isinstance(v, dict | list)})
        cols = sorted({c for r in rows for c in r} - {"stage"}, key=lambda c: (c != "period", c))
        page.table("KPIs by stage", rows, ["stage", *cols], testid="kpis-table")

    # ------------------------------------------------------------------ attribution
    @page_route("/attribution", "Attribution")
    async def attribution_page(request: Request, page: Page, rec: auth.KeyRecord) -> None:
        if "attribution" not in ANALYSES:
            page.error = "attribution is not available in this installation"
            return
        p = _params(request)
        level, conversion = _one(p, "level", "channel"), _one(p, "conversion", "purchase")
        lookback = _one(p, "lookback", "30d")
        methods = p.get("methods") or list(ATTRIBUTION_METHODS)
        page.field("level", "Level", level, "select", ("channel", "campaign", "touchpoint"))
        page.field("conversion", "Conversion event", conversion)
        page.field("lookback", "Lookback", lookback)
        done = await compute(request, page, rec, "attribution", attribution_queries(p)["attribution"])
        if done is None:
            return
        d = done.data
        page.chart(done.figure, "attribution-chart", "Conversions credited per method")
        key = d.get("level", level)
        wide: dict[str, dict[str, Any]] = {}
        for res in d.get("results", []):
            for row in res.get("channels", res.get("values", [])):
                name = str(row.get(key, row.get("value", row.get(next(iter(row)), ""))))
                w = wide.setdefault(name, {key: name, "spend": row.get("spend")})
                w[res["method"]] = row.get("conversions")
                w[f"ROAS {res['method']}"] = row.get("roas")
        rows = sorted(wide.values(), key=lambda r: -(r.get("markov") or r.get(methods[0]) or 0))
        page.table("Conversions and ROAS by method", rows, testid="attribution-table")

    # ------------------------------------------------------------------ retention
    @page_route("/retention", "Retention")
    async def retention_page(request: Request, page: Page, rec: auth.KeyRecord) -> None:
        p = _params(request)
        period, start, ret = _one(p, "period", "week"), _one(p, "start_event"), _one(p, "return_event")
        page.field("period", "Period", period, "select", ("day", "week", "month"))
        page.field("start_event", "Start event", start)
        page.field("return_event", "Return event", ret)
        breakdown = _one(p, "breakdown")
        sv = await saved(request, page, rec)
        page.field("breakdown", "Breakdown", breakdown, "select", [("", "none"), "channel", "touchpoint",
                                                                   "utm_campaign", *sv.breakdowns()])
        done = await compute(request, page, rec, "retention", retention_queries(p)["retention"])
        if done is None:
            return
        page.cards([("Cohort people", done.data.get("size"), "retention-size")])
        page.chart(done.figure, "retention-heatmap", "Retention heatmap")
        curve = done.data.get("curve") or []
        if curve:
            page.table("Retention curve", curve, testid="retention-curve")

    # ------------------------------------------------------------------ CLV
    @page_route("/clv", "Customer value")
    async def clv_page(request: Request, page: Page, rec: auth.KeyRecord) -> None:
        p = _params(request)
        horizon = _one(p, "horizon", "12")
        page.field("horizon", "Horizon (months)", horizon, "number")
        done = await compute(request, page, rec, "clv", clv_queries(p)["clv"])
        if done is None:
            return
        d = done.data
        page.cards([("Customers", d.get("people"), "clv-people"), ("Mean CLV", d.get("mean_clv"), "clv-mean"),
                    ("Revenue", d.get("total_revenue"), "clv-revenue"), ("Mean P(alive)", d.get("mean_p_alive"),
                                                                         "clv-alive")])
        page.chart(done.figure, "clv-chart", "CLV distribution")
        page.table("Top customers", d.get("top", []), ["unit", "frequency", "revenue", "p_alive",
                                                       "expected_purchases", "clv"], testid="clv-top",
                   links={"unit": "/person/{value}"})

    # ------------------------------------------------------------------ surveys
    @page_route("/surveys", "Surveys")
    async def surveys_page(request: Request, page: Page, rec: auth.KeyRecord) -> None:
        p = _params(request)
        model = _one(p, "model") or None
        page.field("model", "Journey model", model or "", "select", [("", "default"), *_models()])
        done = await compute(request, page, rec, "surveys", surveys_queries(p)["surveys"])
        if done is None:
            return
        d = done.data
        o = d.get("overall", {})
        page.cards([("Answers", o.get("answers"), "surveys-answers"),
                    ("NPS", (o.get("nps") or {}).get("value"), "surveys-nps"),
                    ("CSAT", (o.get("csat") or {}).get("value"), "surveys-csat")])
        page.chart(done.figure, "surveys-chart", "Emotion curve")
        page.table("Emotion per stage", d.get("emotion", []), ["label", "face", "score", "n", "sentiment",
                                                                "comments"], testid="surveys-emotion")
        rows = [{"stage": r.get("stage"), "answers": r.get("answers"), "NPS": (r.get("nps") or {}).get("value"),
                 "CSAT": (r.get("csat") or {}).get("value"), "CES": (r.get("ces") or {}).get("value")}
                for r in d.get("rows", [])]
        page.table("NPS / CSAT / CES per stage", rows, testid="surveys-rows")
        page.table("Comment themes", d.get("themes", []), testid="surveys-themes")

    # ------------------------------------------------------------------ personas
    @page_route("/personas", "Personas")
    async def personas_page(request: Request, page: Page, rec: auth.KeyRecord) -> None:
        p = _params(request)
        k = _one(p, "k")
        page.field("k", "Number of personas (empty: automatic)", k, "number")
        done = await compute(request, page, rec, "personas", personas_queries(p)["personas"])
        if done is None:
            return
        d = done.data
        page.chart(done.figure, "personas-chart", "Personas")
        cards = []
        for x in d.get("personas", []):
            traits = x.get("traits") or x.get("top_traits") or {}
            items = traits.items() if isinstance(traits, dict) else enumerate(traits)
            trait_html = "".join(f"<li>{html.escape(str(a))}: {html.escape(_fmt(b))}</li>" for a, b in list(items)[:6])
            funnel = x.get("funnel") or x.get("stages") or {}
            f_items = funnel.items() if isinstance(funnel, dict) else [(f.get("stage"), f.get("share", f.get("people")))
                                                                       for f in funnel if isinstance(f, dict)]
            funnel_html = "".join(f"<li>{html.escape(str(a))}: {html.escape(_fmt(b))}</li>" for a, b in f_items)
            cards.append(
                f"<div class='persona card' data-testid='persona-{html.escape(str(x.get('key')))}'>"
                f"<h3>{html.escape(str(x.get('label', x.get('key'))))}</h3>"
                f"<div class='big'>{_pct(x.get('share'))}</div><div class='muted'>{_fmt(x.get('size', x.get('people')))}"
                f" people</div><p>{html.escape(str(x.get('description', '')))}</p>"
                f"<h4>Traits</h4><ul>{trait_html}</ul><h4>Funnel</h4><ul>{funnel_html}</ul></div>")
        page.html("<div class='persona-grid'>" + "".join(cards) + "</div>")

    # ------------------------------------------------------------------ pain points
    @page_route("/painpoints", "Pain points and moments of truth")
    async def painpoints_page(request: Request, page: Page, rec: auth.KeyRecord) -> None:
        p = _params(request)
        model = _one(p, "model") or None
        page.field("model", "Journey model", model or "", "select", [("", "default"), *_models()])
        q = painpoints_queries(p)
        done, mom = await compute_all(request, page, rec, q)
        if done is not None:
            page.chart(done.figure, "painpoints-chart", "Pain points by severity")
            page.table("Pain points", done.data.get("pain_points", []), testid="painpoints-table")
        if mom is not None:
            page.chart(mom.figure, "moments-chart", "Moments of truth")
            page.table("Moments of truth", mom.data.get("moments", []), testid="moments-table")

    # ------------------------------------------------------------------ experiment
    @page_route("/experiment", "Experiment")
    async def experiment_page(request: Request, page: Page, rec: auth.KeyRecord) -> None:
        p = _params(request)
        variant, goal = _one(p, "variant"), _one(p, "goal", "purchase")
        window, control, covariate = _one(p, "window"), _one(p, "control"), _one(p, "cuped_covariate")
        unit, split, model = _one(p, "unit", "person"), _one(p, "split"), _one(p, "model") or None
        page.field("variant", "Variant (properties.KEY or trait:KEY)", variant, suggestions=VARIANT_EXAMPLES)
        page.field("goal", "Goal (event or stage=…)", goal, suggestions=("purchase", "stage=decision",
                                                                         "add_to_cart", "signup"))
        page.field("window", "Window (empty: any time)", window)
        page.field("control", "Control (empty: automatic)", control)
        page.field("cuped_covariate", "CUPED covariate (optional)", covariate, suggestions=COVARIATE_EXAMPLES)
        page.field("split", "Expected split (A=50,B=50; empty: equal)", split)
        page.field("unit", "Unit", unit, "select", ("person", "account"))
        page.field("model", "Journey model", model or "", "select", [("", "default"), *_models()])
        if not variant:
            page.note("Choose the variant: a property of the touches that carries the assignment "
                      "(properties.variant) or a trait of the people (trait:test_group), and the goal. "
                      "Example on the demo (no experiment is planted there): trait:device, goal purchase.")
            return
        from journeylens.analyses.experiments import parse_split

        try:
            expected = parse_split(split)
        except JourneylensError as exc:
            page.error, page.status = str(exc), exc.http_status
            return
        done = await compute(request, page, rec, "experiment", {
            "variant": variant, "goal": goal, "window": window or None, "control": control or None,
            "cuped_covariate": covariate or None, "unit": unit, "expected_split": expected or None,
            "model": model})
        if done is None:
            return
        _experiment_blocks(page, done)

    # ------------------------------------------------------------------ journey map
    @page_route("/map", "Journey map")
    async def map_page(request: Request, page: Page, rec: auth.KeyRecord) -> None:
        p = _params(request)
        mp = map_params(p)
        page.field("model", "Journey model", mp["model"] or "", "select", [("", "default"), *_models()])
        sv = await saved(request, page, rec)
        personas = [*sv.personas, *([mp["persona"]] if mp["persona"] and mp["persona"] not in sv.personas else [])]
        others = [*sv.personas, *([x] if (x := mp["compare_persona"]) and x not in sv.personas else [])]
        page.field("persona", "Persona", mp["persona"] or "", "select", [("", "all"), *personas])
        if sv.cohorts or mp["segment"]:
            page.field("segment", "Cohort", mp["segment"] or "", "select",
                       [("", "all"), *sv.cohorts, *([mp["segment"]] if mp["segment"] not in (None, *sv.cohorts) else [])])
        page.field("period", "Period", mp["period"] or "", suggestions=sv.months)
        page.field("compare_persona", "Compare with persona", mp["compare_persona"] or "", "select",
                   [("", "–"), *others])
        if sv.cohorts or mp["compare_segment"]:
            page.field("compare_segment", "Compare with cohort", mp["compare_segment"] or "", "select",
                       [("", "–"), *sv.cohorts,
                        *([mp["compare_segment"]] if mp["compare_segment"] not in (None, *sv.cohorts) else [])])
        page.field("compare_period", "Compare with period", mp["compare_period"] or "", suggestions=sv.months)
        if not sv.personas:
            page.note("No saved personas: run `journeylens personas --save` (or ws.save_personas) to pick one here.")
        done = await compute(request, page, rec, "map", map_queries(p)["map"])
        if done is None:
            return
        q = urlencode({k: v for k, v in mp.items() if v})
        d = done.data
        m = d.get("a", d)
        page.cards([("Model", m.get("model_name", m.get("model")), "map-model"),
                    ("People on the map", m.get("total_units"), "map-units")])
        page.html(f"<p class='downloads'><a class='button' data-testid='map-download-html' "
                  f"href='/map/download.html?{q}'>Download HTML</a> <a class='button' data-testid='map-download-png' "
                  f"href='/map/download.png?{q}'>Download PNG</a></p>"
                  f"<iframe class='map-frame' data-testid='map-frame' src='/map/view?{q}'></iframe>")

    async def map_result(request: Request, rec: auth.KeyRecord) -> Computed:
        svc: QueryService = request.app.state.query
        mp = {k: v for k, v in map_params(_params(request)).items() if v}
        return await run_in_threadpool(svc.compute, rec.workspace, ANALYSES["map"], mp)

    async def map_file(request: Request, kind: str) -> Response:
        rec = session_record(request)
        if rec is None or rec.kind not in ("read", "admin"):
            return login_redirect(request)
        try:
            done = await map_result(request, rec)
        except (JourneylensError, ValidationError) as exc:
            return HTMLResponse(html.escape(str(exc)), status_code=getattr(exc, "http_status", 400))
        text = str(done.extras.get("html", ""))
        if kind == "view":
            return HTMLResponse(text)
        if kind == "html":
            return HTMLResponse(text, headers={"Content-Disposition": 'attachment; filename="journey-map.html"'})
        png = await run_in_threadpool(_png, text, "a" in done.data and "b" in done.data)
        return Response(png, media_type="image/png",
                        headers={"Content-Disposition": 'attachment; filename="journey-map.png"'})

    @app.get("/map/view", include_in_schema=False, response_model=None)
    async def map_view(request: Request) -> Response:
        return await map_file(request, "view")

    @app.get("/map/download.html", include_in_schema=False, response_model=None)
    async def map_html(request: Request) -> Response:
        return await map_file(request, "html")

    @app.get("/map/download.png", include_in_schema=False, response_model=None)
    async def map_png(request: Request) -> Response:
        return await map_file(request, "png")

    # ------------------------------------------------------------------ person
    @page_route("/person", "Person timeline")
    async def person_search(request: Request, page: Page, rec: auth.KeyRecord) -> Response | None:
        who = _one(_params(request), "id")
        if who:
            return RedirectResponse(f"/person/{who}", status_code=303)
        page.field("id", "Person, user or anonymous id", "")
        page.note("Enter any id of a person: their stitched journey is shown.")
        return None

    @page_route("/person/{person}", "Person timeline")
    async def person_page(request: Request, page: Page, rec: auth.KeyRecord) -> None:
        who = request.path_params["person"]
        page.path = "/person"
        page.field("id", "Person, user or anonymous id", who)
        page.form_action = "/person"
        done = await compute(request, page, rec, "journey/{person}", {"person": who})
        if done is None:
            return
        d = done.data
        page.cards([("Person", d["person_id"], "person-id"), ("Touches", len(d["touches"]), "person-touches"),
                    ("Ids", len(d["ids"]), "person-ids")])
        page.chart(done.figure, "person-timeline", "Timeline")
        page.table("Touches", d["touches"], testid="person-table", limit=500)

    # ------------------------------------------------------------------ settings
    @page_route("/settings", "Workspace settings")
    async def settings_page(request: Request, page: Page, rec: auth.KeyRecord) -> None:
        from journeylens.server import links as links_mod

        writer = request.app.state.collector.writer
        keys = await writer.run(lambda s: auth.list_keys(s, rec.workspace))
        lks = await writer.run(lambda s: [lk for lk in links_mod.list_links(s) if lk.workspace == rec.workspace])
        new_key = request.query_params.get("new_key")
        page.cards([("Workspace", rec.workspace, "settings-workspace"), ("Your key", f"{rec.kind} ({rec.key_id})",
                                                                          "settings-kind")])
        if new_key and rec.kind == "admin":
            page.html(f"<div class='notice' data-testid='new-key'>New key (shown once): <code>{html.escape(new_key)}"
                      "</code></div>")
        page.table("Keys", [k.to_dict() for k in keys], ["key_id", "kind", "label", "created_at", "revoked_at"],
                   testid="keys-table")
        if rec.kind == "admin":
            page.html("<form method='post' action='/settings/keys' class='inline'>"
                      f"<input type='hidden' name='csrf' value='{html.escape(page.csrf)}'>"
                      "<label>New key <select name='kind'><option>read</option><option>write</option></select></label>"
                      " <input name='label' placeholder='label'> <button>Create key</button></form>")
        public = request.app.state.collector.cfg.public_url.rstrip("/")
        rows = []
        for lk in lks:
            url = f"{public}/r/{lk.code}"
            rows.append(f"<div class='card qr'><div>{_qr_svg(url)}</div><div><b>{html.escape(lk.touchpoint)}</b><br>"
                        f"<code>{html.escape(url)}</code><br><span class='muted'>{html.escape(lk.url)}</span>"
                        "</div></div>")
        page.html("<h2>Links and QR codes</h2>" + ("".join(rows) or "<p class='muted'>No links yet (journeylens "
                                                         "links create, or POST /api/links).</p>"))
        q = await compute(request, page, rec, "quarantine", settings_queries(_params(request))["quarantine"])
        if q is not None:
            page.cards([("Quarantined rows", q.data.get("total"), "quarantine-total")])
            page.table("Quarantine (newest)", q.data.get("rows", []), testid="quarantine-table")

    @app.post("/settings/keys", include_in_schema=False, response_model=None)
    async def create_key(request: Request) -> Response:
        rec = session_record(request)
        if rec is None:
            return RedirectResponse("/login", status_code=303)
        secret = await ensure_secret(request.app)
        form = await _form(request)
        body = read_session(secret, request.cookies.get(SESSION_COOKIE)) or {}
        if not hmac.compare_digest(form.get("csrf", ""), csrf_token(secret, str(body.get("c", "")))):
            return HTMLResponse("CSRF check failed", status_code=403)
        if rec.kind != "admin":
            return HTMLResponse("only an admin key can create keys", status_code=403)
        kind = form.get("kind", "read")
        if kind not in ("read", "write"):
            return HTMLResponse("kind must be read or write", status_code=400)
        label = form.get("label") or None
        made, key = await request.app.state.collector.writer.run(
            lambda s: auth.create_key(s, rec.workspace, kind, label))
        request.app.state.collector.keys.add(made)
        return RedirectResponse("/settings?" + urlencode({"new_key": key}), status_code=303)


# ============================================================================ small helpers
def _stage_breakdown_rows(d: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per breakdown value of a stage funnel: units per stage and the share reaching the last."""
    rows = []
    for b in d["breakdown"]["values"]:
        row: dict[str, Any] = {"value": b["value"], "units": b["total_units"]}
        row.update({s["stage"]: s["people"] for s in b["stages"]})
        if b["stages"]:
            row["conversion to last stage"] = b["stages"][-1]["conversion_from_start"]
        rows.append(row)
    return rows


def _interval(lo: Any, hi: Any) -> str:
    return "–" if lo is None or hi is None else f"{float(lo):.1%} – {float(hi):.1%}"


def _p(value: Any) -> str:
    return "–" if value is None else f"{float(value):.3g}"


def _experiment_blocks(page: Page, done: Computed) -> None:
    """Cards, status, SRM check, per-variant table and chart of an experiment readout."""
    d = done.data
    variants = d.get("variants", [])
    srm = d.get("srm")
    page.cards([("Status", "ok" if d["status"] == "ok" else "not enough data", "experiment-status"),
                ("Control", d.get("control"), "experiment-control"),
                (f"{str(d.get('unit', 'person')).capitalize()}s", sum(int(v["units"]) for v in variants),
                 "experiment-units"),
                ("Mixed (left out)", d.get("mixed_units"), "experiment-mixed"),
                (f"Needed per variant for +{float(d.get('mde') or 0):.0%}", d.get("units_needed"),
                 "experiment-needed")])
    if d["status"] != "ok":
        reasons = "".join(f"<li>{html.escape(str(r))}</li>" for r in d.get("reasons", []))
        page.html("<div class='notice warn' data-testid='experiment-not-enough'><b>Not enough data</b> — the "
                  f"numbers are shown, but draw no conclusion:<ul>{reasons}</ul></div>")
    page.html(f"<p class='verdict' data-testid='experiment-verdict'>{html.escape(str(d.get('verdict', '')))}</p>")
    if srm is not None:
        observed, expected = srm.get("observed") or {}, srm.get("expected") or {}
        parts = ", ".join(f"{html.escape(str(k))} {_fmt(observed.get(k))} (expected {_fmt(expected.get(k))})"
                          for k in observed)
        state = "mismatch" if srm.get("mismatch") else "ok"
        label = ("sample-ratio mismatch: fix the assignment before reading the result" if srm.get("mismatch")
                 else "the split matches the expected one")
        page.html(f"<div class='notice srm {state}' data-testid='experiment-srm' data-state='{state}' "
                  f"data-p='{srm.get('p_value')}'><b>Sample-ratio check</b>: {label} (χ² = "
                  f"{float(srm.get('chi2') or 0):.2f}, p = {_p(srm.get('p_value'))}). {parts}</div>")
    conf = float(d.get("confidence") or 0.95)
    rows = []
    for v in variants:
        t = v.get("test") or {}
        c = v.get("cuped") or {}
        row = {"variant": v["variant"] + (" (control)" if v.get("is_control") else ""), "units": v["units"],
               "conversions": v["conversions"], "rate": f"{float(v['rate']):.2%}",
               f"rate {conf:.0%} CI": _interval(v.get("lower"), v.get("upper")),
               "relative lift": "–" if t.get("lift") is None else f"{float(t['lift']):+.1%}",
               f"lift {conf:.0%} CI": _interval(t.get("lift_lower"), t.get("lift_upper")),
               "p-value": _p(t.get("p_value"))}
        if d.get("cuped_covariate"):
            row["CUPED difference"] = "–" if c.get("difference") is None else f"{float(c['difference']):+.2%}"
            row["CUPED p-value"] = _p(c.get("p_value"))
        rows.append(row)
    page.table("Variants", rows, testid="experiment-table")
    page.chart(done.figure, "experiment-chart", f"Conversion per variant with {conf:.0%} intervals")


async def _form(request: Request) -> dict[str, str]:
    raw = (await request.body())[:100_000].decode("utf-8", errors="replace")
    return {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def _safe_next(target: str) -> str:
    """Only local paths (no scheme, no //host) as redirect targets."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def _duration(seconds: Any) -> str:
    from journeylens.analyses._time import format_duration

    return format_duration(seconds) if seconds is not None else "–"


def _histogram(step: dict[str, Any]) -> Any:
    import plotly.graph_objects as go

    bins = step["histogram"]
    labels = [f"{_duration(b['lower_seconds'])}–{_duration(b['upper_seconds'])}" for b in bins]
    fig = go.Figure(go.Bar(x=labels, y=[b["persons"] for b in bins]))
    fig.update_layout(title=f"Time to convert to '{step['step']}'", yaxis_title="people")
    return fig


def _trend(rows: list[dict[str, Any]]) -> Any:
    import plotly.graph_objects as go

    fig = go.Figure()
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r.get("breakdown") or "all", []).append(r)
    for name, rs in groups.items():
        fig.add_trace(go.Scatter(x=[r["period"] for r in rs], y=[r["conversion"] for r in rs], name=name,
                                 mode="lines+markers"))
    fig.update_layout(title="Conversion by entry period", yaxis_tickformat=".0%")
    return fig


def _qr_svg(url: str) -> str:
    import io

    import segno

    buf = io.BytesIO()
    segno.make(url, error="m").save(buf, kind="svg", scale=3, xmldecl=False, svgns=True)
    return buf.getvalue().decode()


def _png(text: str, wide: bool) -> bytes:
    from journeylens.journeymap.render import render_png

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "map.png"
        if wide:
            render_png(text, out, width=2200)
        else:
            render_png(text, out)
        return out.read_bytes()
