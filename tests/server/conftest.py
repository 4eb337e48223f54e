"""Collector fixtures: a store with keys, real uvicorn servers (subprocess or thread)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from journeylens.server import auth
from journeylens.server.app import CollectorSettings, create_app
from journeylens.store.duckdb import DuckDBStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_db(path: Path) -> dict[str, str]:
    """Create the store with keys: write/read/admin for workspace A, write/admin for B."""
    store = DuckDBStore(path)
    try:
        keys = {}
        for name, ws, kind in (("wa", "A", "write"), ("ra", "A", "read"), ("aa", "A", "admin"),
                               ("wb", "B", "write"), ("ab", "B", "admin")):
            keys[name] = auth.create_key(store, ws, kind)[1]
        return keys
    finally:
        store.close()


class ServerProcess:
    """``python -m journeylens serve`` (or the light ``python -m journeylens.server``) as a child process."""

    def __init__(self, db: Path, port: int | None = None, env: dict[str, str] | None = None,
                 light: bool = False) -> None:
        self.db, self.port = db, port or free_port()
        self.light = light
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> ServerProcess:
        log = open(self.db.with_suffix(".log"), "ab")  # noqa: SIM115 - closed with the process
        cmd = ([sys.executable, "-m", "journeylens.server", "--db", str(self.db)] if self.light else
               [sys.executable, "-m", "journeylens", "--db", str(self.db), "serve"])
        self.proc = subprocess.Popen([*cmd, "--port", str(self.port)], env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.db.with_suffix('.log').read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("server did not start")

    def stop(self) -> int:
        """Graceful stop (SIGTERM); 0 when it shut down cleanly (uvicorn re-raises the signal
        after its graceful shutdown, so -SIGTERM counts as clean too)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(60)
        return 0 if code == -signal.SIGTERM else code

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)


class ThreadServer:
    """The app in a real uvicorn server on a thread of the test process; ``query`` reads the
    store through the writer thread (the only connection)."""

    def __init__(self, db: Path, settings: CollectorSettings | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(str(db), settings or CollectorSettings())
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> ThreadServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def query(self, sql: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
        return self.app.state.collector.writer.run_sync(lambda s: s.query(sql, params or []))  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ThreadServer, dict[str, str]]]:
    db = tmp_path_factory.mktemp("collector") / "c.duckdb"
    keys = make_db(db)
    srv = ThreadServer(db).start()
    yield srv, keys
    srv.stop()
