"""``python -m journeylens.server --db FILE --port N``: the collector without the CLI's imports
(same app as ``journeylens serve``; used by the crash and load scripts for fast restarts)."""

from __future__ import annotations

import argparse

import uvicorn

from journeylens.server.app import CollectorSettings, create_app


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m journeylens.server")
    p.add_argument("--db", required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    args = p.parse_args()
    uvicorn.run(create_app(args.db, CollectorSettings.from_config(tune_gc=True)), host=args.host, port=args.port,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
