"""Settings, declared once as data (name, default, environment variable, help).

Resolution order: explicit argument / CLI flag > environment variable > default.
``docs/settings.md`` is generated from :data:`SETTINGS` and a test keeps the
two in sync.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Setting:
    name: str
    default: Any
    help: str

    @property
    def env(self) -> str:
        return "JOURNEYLENS_" + self.name.upper()

    def value(self, override: Any = None) -> Any:
        if override is not None:
            return override
        raw = os.environ.get(self.env)
        if raw is None:
            return self.default
        return type(self.default)(raw) if self.default is not None else raw


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("db", "journeylens.duckdb",
                "Store URL: a DuckDB file path (default) or spark://MASTER?warehouse=DIR."),
        Setting("workspace", "default", "Workspace (tenant) to read and write."),
        Setting("model", "five_phase", "Default journey model (a built-in key or a YAML path)."),
        Setting("chunk_rows", 500_000, "Rows per chunk when importing files."),
        Setting("memory_limit", "3GB",
                "Memory DuckDB may use before spilling to disk (e.g. 3GB); bounds imports and analyses."),
        Setting("collector_max_event_bytes", 32 * 1024, "Collector: largest accepted message (compact JSON bytes); "
                "larger messages are quarantined."),
        Setting("collector_max_request_bytes", 500 * 1024, "Collector: largest request body, before and after "
                "gzip decompression; larger requests get 400."),
        Setting("collector_body_timeout", 10.0, "Collector: seconds allowed for reading one request body."),
        Setting("collector_commit_ms", 10.0, "Collector: how long the writer gathers requests into one "
                "transaction (group commit), in milliseconds."),
        Setting("collector_commit_events", 5000, "Collector: a group commit closes early at this many messages."),
        Setting("collector_validate_workers", 2, "Collector: processes that map and validate messages beside the "
                "server (0 = validate in the server's threads)."),
        Setting("collector_queue_events", 100_000, "Collector: messages waiting for the writer before requests "
                "get 503 with Retry-After."),
        Setting("collector_ip_prefix_v4", 24, "Collector: leading bits of IPv4 addresses kept (0-32); "
                "32 keeps them whole, i.e. no anonymising."),
        Setting("collector_ip_prefix_v6", 48, "Collector: leading bits of IPv6 addresses kept (0-128)."),
    )
}


def setting(name: str, override: Any = None) -> Any:
    """The effective value of setting ``name``."""
    return SETTINGS[name].value(override)


def settings_markdown() -> str:
    lines = ["# Settings", "", "Each setting can be given as a CLI flag or an environment variable.", "",
             "| setting | environment variable | default | meaning |", "|---|---|---|---|"]
    for s in SETTINGS.values():
        lines.append(f"| `{s.name}` | `{s.env}` | `{s.default}` | {s.help} |")
    return "\n".join(lines) + "\n"
