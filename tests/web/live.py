"""A real uvicorn server of ``create_server`` on a thread, with keys made beforehand (shared by the
query API and dashboard tests)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

import journeylens
from journeylens.server import auth
from journeylens.server.app import CollectorSettings
from journeylens.server.site import create_server
from journeylens.store.duckdb import DuckDBStore


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_keys(db: Path, workspace: str = "default") -> dict[str, str]:
    """read/write/admin keys of ``workspace`` and a read key of workspace ``other``."""
    store = DuckDBStore(db)
    try:
        keys = {kind: auth.create_key(store, workspace, kind)[1] for kind in ("read", "write", "admin")}
        keys["other_read"] = auth.create_key(store, "other", "read")[1]
        return keys
    finally:
        store.close()


def save_planted_personas(demo: Any, db: Path) -> dict[str, int]:
    """Save the demo's planted personas as the cohorts ``persona:<key>`` (as ``personas --save``
    would with a perfect clustering) and one ordinary cohort ``buyers``; returns persona -> members."""
    persons = demo.truth_persons()
    with journeylens.open(db) as ws:
        sizes = {str(key): ws.save_cohort(f"persona:{key}", group.person_id.tolist(), definition={"persona": key})
                 for key, group in persons.groupby("persona")}
        ws.save_cohort("buyers", persons[persons.converted].person_id.tolist())
    return sizes


class LiveServer:
    def __init__(self, db: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_server(str(db), CollectorSettings(public_url=self.url))
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", access_log=False))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(60)
