"""Collector commands: ``serve``, ``keys``, ``links``, ``forget``, ``export-person``, ``purge``.

The collector process owns the DuckDB file while it runs (DuckDB allows one
writing process), so ``keys``, ``links``, ``forget`` and ``purge`` work on a
stopped server; with a running server use its admin API (docs/collector.md).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from journeylens.cli.render import Format, FormatOpt, emit, out, to_json
from journeylens.errors import ConfigError, InvalidParameterError

if TYPE_CHECKING:
    import pandas as pd

keys_app = typer.Typer(help="API keys of the collector (write, read, admin).", no_args_is_help=True)
links_app = typer.Typer(help="Redirect / QR links for offline touchpoints.", no_args_is_help=True)


class _Rows:
    """A list of dicts rendered by ``emit``."""

    def __init__(self, rows: list[dict[str, Any]] | dict[str, Any]) -> None:
        self.rows = rows

    def to_dict(self) -> Any:
        return self.rows

    def to_pandas(self) -> pd.DataFrame:
        import pandas as pd

        rows = self.rows if isinstance(self.rows, list) else [self.rows]
        return pd.DataFrame(rows)


def _store_and_workspace(workspace: str | None = None) -> tuple[Any, str]:
    from journeylens.cli.app import _open
    from journeylens.store.duckdb import DuckDBStore

    ws = _open()
    if not isinstance(ws.store, DuckDBStore):
        ws.close()
        raise ConfigError("the collector and its commands need a DuckDB store", hint="pass --db FILE.duckdb")
    return ws, workspace or ws.name


# ------------------------------------------------------------------------ serve
def serve(
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=1, max=65535, help="TCP port.")] = 8080,
    public_url: Annotated[str | None, typer.Option("--public-url", help="Base URL printed in links "
                                                   "(default http://HOST:PORT).")] = None,
    keep_ip: Annotated[bool, typer.Option("--keep-ip", help="Store IP addresses unmasked (default: "
                                          "anonymised to /24 and /48).")] = False,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "warning",
    no_warm: Annotated[bool, typer.Option("--no-warm", help="Do not precompute the dashboard's default pages "
                                          "after data changes (docs/dashboard.md, Performance).")] = False,
) -> None:
    """Run the collector: Segment-compatible tracking API, pixel, redirect links, /metrics.

    Events are acknowledged (200) only after they are committed to the DuckDB
    file. Settings such as limits come from JOURNEYLENS_COLLECTOR_* variables
    (docs/settings.md).
    """
    import uvicorn

    from journeylens import config
    from journeylens.cli.app import _state
    from journeylens.server.app import CollectorSettings
    from journeylens.server.site import create_server

    db = str(config.setting("db", _state.get("db")))
    overrides: dict[str, Any] = {"public_url": public_url or f"http://{host}:{port}", "tune_gc": True}
    if keep_ip:
        overrides["ip_mask"] = None
    app = create_server(db, CollectorSettings.from_config(**overrides), warm=not no_warm)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False, timeout_keep_alive=30)


# ------------------------------------------------------------------------ keys
@keys_app.command("create")
def keys_create(
    kind: Annotated[str, typer.Option("--kind", help="write (send events), read (query) or admin.")] = "write",
    workspace: Annotated[str | None, typer.Option("--workspace", "-w", help="Workspace of the key "
                                                  "(default: the global --workspace).")] = None,
    label: Annotated[str | None, typer.Option("--label", help="A note (who uses the key).")] = None,
    fmt: FormatOpt = Format.table,
) -> None:
    """Create a key. The key is printed once; only its SHA-256 is stored."""
    from journeylens.server import auth

    ws, name = _store_and_workspace(workspace)
    with ws:
        rec, key = auth.create_key(ws.store, name, kind, label)
    emit(_Rows({**rec.to_dict(), "key": key}), fmt, title="New key (store it now: it is not shown again)")


@keys_app.command("list")
def keys_list(fmt: FormatOpt = Format.table) -> None:
    """List keys (ids, kinds, workspaces; never the keys themselves)."""
    from journeylens.server import auth

    ws, _ = _store_and_workspace()
    with ws:
        rows = [r.to_dict() for r in auth.list_keys(ws.store)]
    emit(_Rows(rows), fmt, title=f"{len(rows)} keys")


@keys_app.command("revoke")
def keys_revoke(key_id: Annotated[str, typer.Argument(help="The key id (see `keys list`).")],
                fmt: FormatOpt = Format.table) -> None:
    """Revoke a key (a running server: DELETE /api/keys/KEY_ID revokes at once)."""
    from journeylens.server import auth

    ws, _ = _store_and_workspace()
    with ws:
        rec = auth.revoke_key(ws.store, key_id)
    emit(_Rows(rec.to_dict()), fmt, title="Revoked")


# ------------------------------------------------------------------------ links
@links_app.command("create")
def links_create(
    touchpoint: Annotated[str, typer.Option("--touchpoint", help="Touchpoint of the printed medium, e.g. flyer_berlin.")],
    to: Annotated[str, typer.Option("--to", help="Target URL of the redirect.")],
    channel: Annotated[str, typer.Option("--channel", help="Channel of the recorded touch.")] = "qr",
    code: Annotated[str | None, typer.Option("--code", help="Short code (default: 8 random characters).")] = None,
    utm_source: Annotated[str | None, typer.Option("--utm-source")] = None,
    utm_medium: Annotated[str | None, typer.Option("--utm-medium")] = None,
    utm_campaign: Annotated[str | None, typer.Option("--utm-campaign")] = None,
    utm_content: Annotated[str | None, typer.Option("--utm-content")] = None,
    utm_term: Annotated[str | None, typer.Option("--utm-term")] = None,
    base_url: Annotated[str, typer.Option("--base-url", help="Public URL of the collector.")] = "http://localhost:8080",
    fmt: FormatOpt = Format.table,
) -> None:
    """Create a redirect link: GET /r/CODE records a touch at the touchpoint and redirects."""
    from journeylens.server import links

    ws, name = _store_and_workspace()
    with ws:
        link = links.create_link(ws.store, name, touchpoint, to, channel=channel, code=code,
                                 utm_source=utm_source, utm_medium=utm_medium, utm_campaign=utm_campaign,
                                 utm_content=utm_content, utm_term=utm_term)
    emit(_Rows({**link.to_dict(), "link": f"{base_url.rstrip('/')}/r/{link.code}"}), fmt, title="New link")


@links_app.command("list")
def links_list(fmt: FormatOpt = Format.table) -> None:
    """List the links of the workspace."""
    from journeylens.server import links

    ws, name = _store_and_workspace()
    with ws:
        rows = [lk.to_dict() for lk in links.list_links(ws.store, name)]
    emit(_Rows(rows), fmt, title=f"{len(rows)} links")


@links_app.command("qr")
def links_qr(
    code: Annotated[str, typer.Argument(help="Link code.")],
    out_file: Annotated[Path, typer.Option("--out", "-o", help="qr.png or qr.svg")] = Path("qr.png"),
    base_url: Annotated[str, typer.Option("--base-url", help="Public URL of the collector.")] = "http://localhost:8080",
    scale: Annotated[int, typer.Option("--scale", min=1, max=64, help="Pixels per module.")] = 8,
) -> None:
    """Render the QR code of a link (PNG or SVG by the file suffix)."""
    from journeylens.server import links

    ws, name = _store_and_workspace()
    with ws:
        known = {lk.code for lk in links.list_links(ws.store, name)}
    if code not in known:
        from journeylens.errors import UnknownNameError

        raise UnknownNameError("link", code, known)
    url = f"{base_url.rstrip('/')}/r/{code}"
    links.render_qr(url, out_file, scale=scale)
    out.print(f"wrote {out_file} ({url})")


# ------------------------------------------------------------------------ privacy
def forget(person: Annotated[str, typer.Argument(help="A user id, anonymous id or person id.")],
           yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
           fmt: FormatOpt = Format.table) -> None:
    """Erase a person (GDPR): events, identities, traits, survey answers, cohort memberships and
    quarantine rows of all their ids; later events of these ids are dropped."""
    from journeylens.server import privacy

    if not yes and sys.stdin.isatty() and not typer.confirm(f"Forget everything about '{person}'?"):
        raise typer.Exit(1)
    ws, name = _store_and_workspace()
    with ws:
        report = privacy.forget(ws.store, name, person)
        ws.store.checkpoint()
    d = report.to_dict()
    emit(_Rows([{"table": t, "rows deleted": n} for t, n in d["deleted"].items()]) if fmt is Format.table
         else _Rows(d), fmt, title=f"Forgot {person} (ids: {', '.join(report.ids)})")


def export_person(person: Annotated[str, typer.Argument(help="A user id, anonymous id or person id.")],
                  out_file: Annotated[Path | None, typer.Option("--out", "-o", help="Write JSON here "
                                                                 "instead of stdout.")] = None) -> None:
    """Everything held about a person (GDPR access request) as JSON."""
    from journeylens.server import privacy

    ws, name = _store_and_workspace()
    with ws:
        data = privacy.export_person(ws.store, name, person)
    text = to_json(data) + "\n"
    if out_file is None:
        sys.stdout.write(text)
    else:
        out_file.write_text(text, encoding="utf-8")


def purge(days: Annotated[int, typer.Option("--days", help="Delete data older than this many days.")],
          fmt: FormatOpt = Format.table) -> None:
    """Data retention policy (GDPR): delete events, survey answers and quarantine rows older than N days."""
    from journeylens.server import privacy

    if days < 1:
        raise InvalidParameterError(f"--days must be at least 1, not {days}")
    ws, name = _store_and_workspace()
    with ws:
        deleted = privacy.apply_retention(ws.store, name, days)
    emit(_Rows([{"table": t, "rows deleted": n} for t, n in deleted.items()]), fmt,
         title=f"Retention {days} days")


def register(app: typer.Typer) -> None:
    """Add this module's commands to ``app``."""
    app.command("serve")(serve)
    app.add_typer(keys_app, name="keys")
    app.add_typer(links_app, name="links")
    app.command("forget")(forget)
    app.command("export-person")(export_person)
    app.command("purge")(purge)
