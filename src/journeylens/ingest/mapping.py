"""Which source column feeds which canonical column.

Priority, highest first:

1. an explicit mapping (``--map SOURCE=TARGET``; ``SOURCE=`` with an empty
   target drops the column);
2. a source column named exactly like a canonical column;
3. a case-insensitive match of a canonical name or of an alias in
   :attr:`journeylens.schema.TableSpec.aliases` (``UserID``, ``timestamp``);
4. the same after removing every non-alphanumeric character from both sides
   (``userId``, ``anonymous-id``, ``Event Name``).

Within one level the first column in file order wins; a column whose target
is already taken is treated like an unknown column. Unknown columns are
folded into ``properties`` (events) or ``traits`` (people, accounts); for
costs and surveys they are an error. A ``workspace`` column is ignored: the
workspace is always the one the import runs in.

CSV and Parquet files are checked against their header/schema. JSON lines
have no header: the keys of the first chunk are checked when the file is
opened; a key first seen later is resolved the same way, and for costs and
surveys a row that has a value under such a key is quarantined ("unknown
column").
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from journeylens import schema
from journeylens.errors import InputFileError, suggest

FOLD_INTO: dict[str, str] = {"events": "properties", "people": "traits", "accounts": "traits"}
"""Tables whose unknown source columns are folded into a JSON-object column."""

IGNORED_TARGETS = frozenset({"workspace"})

# Required columns that get a value when the file has no such column.
_DEFAULTED: dict[str, frozenset[str]] = {
    "events": frozenset({"message_id", "workspace", "type"}),
    "people": frozenset({"message_id", "workspace", "ts", "traits"}),
    "accounts": frozenset({"message_id", "workspace", "ts", "traits"}),
    "costs": frozenset({"message_id", "workspace"}),
    "surveys": frozenset({"message_id", "workspace"}),
}

MAP = "map"
FOLD = "fold"
UNKNOWN = "unknown"
IGNORE = "ignore"


def normalise(name: str) -> str:
    """Lower-case, non-alphanumerics removed: ``anonymous-ID`` → ``anonymousid``."""
    return re.sub(r"[^0-9a-z]", "", name.lower())


@dataclass
class Resolution:
    kind: str  # MAP, FOLD, UNKNOWN or IGNORE
    target: str | None = None


@dataclass
class Mapper:
    """Resolves source column names for one target table; can learn new names later."""

    spec: schema.TableSpec
    path: str
    explicit: dict[str, str] = field(default_factory=dict)
    resolved: dict[str, Resolution] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = [n for n in self.spec.names if n not in IGNORED_TARGETS]
        self._lower: dict[str, str] = {}
        self._norm: dict[str, str] = {}
        for alias, target in self.spec.aliases.items():
            self._lower.setdefault(alias.lower(), target)
            self._norm.setdefault(normalise(alias), target)
        for name in self.spec.names:  # canonical names beat aliases of the same spelling
            self._lower[name.lower()] = name
            self._norm[normalise(name)] = name
        seen: dict[str, str] = {}
        for src, tgt in self.explicit.items():
            if tgt == "":
                continue
            if tgt not in names:
                close = suggest(tgt, names)
                raise InputFileError(
                    f"--map {src}={tgt}: '{tgt}' is not a column of {self.spec.name} "
                    f"(columns: {', '.join(names)})",
                    path=self.path, field=tgt, hint=f"did you mean '{close}'?" if close else None,
                )
            if tgt in seen:
                raise InputFileError(
                    f"--map maps both '{seen[tgt]}' and '{src}' to '{tgt}'", path=self.path, field=tgt,
                )
            seen[tgt] = src

    @property
    def fold_target(self) -> str | None:
        return FOLD_INTO.get(self.spec.name)

    def check_explicit(self, names: Iterable[str], where: str = "") -> None:
        """Every ``--map`` source must be a column of the file."""
        present = list(names)
        for src, tgt in self.explicit.items():
            if src not in present:
                close = suggest(src, present) or _suggest_folded(src, present)
                raise InputFileError(
                    f"--map {src}={tgt}: the file has no column '{src}'{where}",
                    path=self.path, field=src, hint=f"did you mean '{close}'?" if close else None,
                )

    def add(self, names: Iterable[str]) -> None:
        """Resolve names not seen before, honouring the priority order."""
        new = [n for n in dict.fromkeys(names) if n not in self.resolved]
        if not new:
            return
        taken = {r.target for r in self.resolved.values() if r.kind == MAP}
        result: dict[str, Resolution] = {}

        def claim(name: str, target: str | None) -> bool:
            if target is None or name in result:
                return False
            if target in IGNORED_TARGETS:
                result[name] = Resolution(IGNORE)
                return True
            if target in taken:
                return False
            taken.add(target)
            result[name] = Resolution(MAP, target)
            return True

        for name in new:
            if name in self.explicit:
                tgt = self.explicit[name]
                result[name] = Resolution(MAP, tgt) if tgt else Resolution(IGNORE)
                if tgt:
                    taken.add(tgt)
        for name in new:
            if name in self.spec.names:
                claim(name, name)
        for name in new:
            claim(name, self._lower.get(name.lower()))
        for name in new:
            claim(name, self._norm.get(normalise(name)))
        for name in new:
            if name not in result:
                result[name] = Resolution(FOLD if self.fold_target else UNKNOWN)
        for name in new:
            self.resolved[name] = result[name]
            self.order.append(name)

    def resolve(self, name: str) -> Resolution:
        if name not in self.resolved:
            self.add([name])
        return self.resolved[name]

    # ------------------------------------------------------------ reporting
    @property
    def column_map(self) -> dict[str, str]:
        return {n: r.target for n in self.order if (r := self.resolved[n]).kind == MAP and r.target}

    @property
    def folded(self) -> list[str]:
        return [n for n in self.order if self.resolved[n].kind == FOLD]

    @property
    def unknown(self) -> list[str]:
        return [n for n in self.order if self.resolved[n].kind == UNKNOWN]

    def targets(self) -> set[str]:
        return set(self.column_map.values())

    def check_unknown(self) -> None:
        """costs/surveys: one error naming every unknown column, with suggestions."""
        unknown = self.unknown
        if not unknown:
            return
        free = [n for n in self.spec.names if n not in self.targets() and n not in IGNORED_TARGETS]
        hints = []
        for name in unknown:
            close = _suggest_folded(name, free)
            if close:
                hints.append(f"'{name}' → '{close}'?")
        listed = ", ".join(f"'{n}'" for n in unknown)
        word = "column" if len(unknown) == 1 else "columns"
        hint = ("did you mean " + ", ".join(hints) + " " if hints else "") + \
            "map with --map SOURCE=TARGET or drop with --map SOURCE="
        raise InputFileError(
            f"unknown {word} {listed} for {self.spec.name} (expected: {', '.join(free) or 'none'})",
            path=self.path, field=unknown[0] if len(unknown) == 1 else None, hint=hint,
        )

    def check_required(self) -> None:
        """Required columns without a default must be mapped from some source column."""
        have = self.targets()
        defaulted = _DEFAULTED[self.spec.name]
        for col in self.spec.required:
            if col in have or col in defaulted:
                continue
            if col == "event" and "type" in have:
                continue  # identify/group/alias rows get event = type; others are quarantined
            unmapped = [n for n in self.order if self.resolved[n].kind in (FOLD, UNKNOWN)]
            close = _suggest_folded(col, unmapped)
            hint = (f"did you mean '{close}'? " if close else "") + f"map a column with --map SOURCE={col}"
            raise InputFileError(
                f"the file has no '{col}' column, which {self.spec.name} requires",
                path=self.path, field=col, hint=hint,
            )


def _suggest_folded(name: str, allowed: Iterable[str]) -> str | None:
    """Like :func:`errors.suggest`, ignoring case and punctuation."""
    allowed = list(allowed)
    by_norm = {normalise(a): a for a in allowed}
    close = suggest(normalise(name), list(by_norm))
    return by_norm[close] if close else None
