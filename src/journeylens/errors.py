"""The journeylens exception tree.

Every error carries a stable ``code`` (used in JSON error bodies and logs), a
human message and an optional ``hint``. The mapping to CLI exit codes and HTTP
status codes lives here and only here.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class JourneylensError(Exception):
    """Base class: a problem the user can act on (never a bug)."""

    code = "error"
    exit_code = 1
    http_status = 400

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"

    def to_dict(self) -> dict[str, str]:
        body = {"code": self.code, "message": self.message}
        if self.hint:
            body["hint"] = self.hint
        return body


class ConfigError(JourneylensError):
    code = "config_error"
    exit_code = 2


class InputFileError(JourneylensError):
    """A file that cannot be read: missing, unreadable format, bad columns."""

    code = "input_file"
    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        line: int | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = ":".join(str(p) for p in (path, line) if p is not None)
        prefix = f"{where}: " if where else ""
        if field:
            prefix += f"field '{field}': "
        super().__init__(prefix + message, hint=hint)
        self.path = path
        self.line = line
        self.field = field


class ModelError(InputFileError):
    """A journey model or touchpoint catalog file that is invalid."""

    code = "invalid_model"


class UnknownNameError(JourneylensError):
    """A name (model, stage, column, event ...) that does not exist."""

    code = "unknown_name"
    http_status = 404

    def __init__(self, kind: str, name: str, allowed: Iterable[str]) -> None:
        allowed = sorted(allowed)
        close = difflib.get_close_matches(name, allowed, n=1)
        hint = f"did you mean '{close[0]}'?" if close else None
        listed = ", ".join(allowed[:20]) + (" ..." if len(allowed) > 20 else "")
        message = f"unknown {kind} '{name}'" + (f"; choose one of: {listed}" if allowed else "")
        super().__init__(message, hint=hint)
        self.kind = kind
        self.name = name


class InvalidParameterError(JourneylensError):
    code = "invalid_parameter"


class StoreError(JourneylensError):
    """The store cannot be opened or is incompatible."""

    code = "store_error"
    exit_code = 3
    http_status = 503


class SchemaVersionError(StoreError):
    code = "schema_version"


class NothingAcceptedError(JourneylensError):
    """An import in which no row was accepted."""

    code = "nothing_accepted"
    exit_code = 4


class RejectedRowsError(JourneylensError):
    """``--strict`` import in which some rows were quarantined."""

    code = "rows_rejected"
    exit_code = 5


def suggest(name: str, allowed: Iterable[str]) -> str | None:
    """Return the closest allowed name, for 'did you mean' hints."""
    close = difflib.get_close_matches(name, list(allowed), n=1)
    return close[0] if close else None
