"""The canonical tables: one definition used for DDL, validation and docs.

Every table the store holds is declared here once. The store creates tables
from :func:`TableSpec.ibis_schema`, importers validate rows against the
``required`` flags and types, and ``docs/schema.md`` is generated from the
descriptions (a test keeps it in sync).

Conventions shared by every importer and the collector:

* ``message_id`` is the dedupe key. Where a source has none it is a
  deterministic hash of the row's identity columns, time, event and
  properties, so re-importing a file adds nothing.
* Timestamps are UTC, microsecond precision. Naive timestamps are read as UTC
  unless an importer is told another time zone.
* ``properties`` and ``traits`` are JSON objects stored as JSON text.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import ibis
import ibis.expr.datatypes as dt
import pyarrow as pa

SCHEMA_VERSION = 1
"""Bumped whenever a table definition changes; checked when a store opens."""

MESSAGE_TYPES = ("track", "page", "screen", "identify", "group", "alias")
"""Segment message types. track/page/screen are touches; the rest carry identity."""

TOUCH_TYPES = ("track", "page", "screen")

SURVEY_KINDS = ("nps", "csat", "ces")
SURVEY_SCALES: dict[str, tuple[float, float]] = {"nps": (0, 10), "csat": (1, 5), "ces": (1, 7)}


@dataclass(frozen=True)
class Column:
    name: str
    dtype: str
    description: str
    required: bool = False

    @property
    def ibis_type(self) -> dt.DataType:
        return dt.dtype(self.dtype).copy(nullable=not self.required)

    @property
    def arrow_type(self) -> pa.DataType:
        return self.ibis_type.to_pyarrow()


@dataclass(frozen=True)
class TableSpec:
    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    derived: bool = False
    """Derived tables are rebuilt from others (never imported directly)."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Common source column names (lower-case) that map to a canonical column."""

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(name)

    def ibis_schema(self) -> ibis.Schema:
        return ibis.schema({c.name: c.ibis_type for c in self.columns})

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.arrow_type, nullable=not c.required) for c in self.columns])

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]


_TS = "timestamp('UTC', 6)"

EVENTS = TableSpec(
    name="events",
    description="Every message received: touches (track/page/screen) and identity messages "
    "(identify/group/alias). One row per message; dedupe key `message_id`.",
    key=("message_id",),
    columns=(
        Column("message_id", "string", "Unique id of the message; the dedupe key.", True),
        Column("workspace", "string", "Workspace (tenant) the event belongs to.", True),
        Column("ts", _TS, "When the touch happened (UTC).", True),
        Column("received_at", _TS, "When journeylens received or imported it (UTC)."),
        Column("type", "string", "Segment message type: " + ", ".join(MESSAGE_TYPES) + ".", True),
        Column("event", "string", "Event name (for page/screen: the page name or 'page'/'screen').", True),
        Column("anonymous_id", "string", "Cookie/device id of a not yet identified person."),
        Column("user_id", "string", "Known id of the person (CRM/login id)."),
        Column("account_id", "string", "B2B account (Segment groupId) the touch or group call refers to."),
        Column("previous_id", "string", "alias only: the id being merged into `user_id`."),
        Column("touchpoint", "string", "Touchpoint key (see the touchpoint catalog)."),
        Column("channel", "string", "Marketing channel (paid_search, email, print, ...)."),
        Column("utm_source", "string", "UTM source of the visit."),
        Column("utm_medium", "string", "UTM medium of the visit."),
        Column("utm_campaign", "string", "UTM campaign of the visit."),
        Column("utm_content", "string", "UTM content of the visit."),
        Column("utm_term", "string", "UTM term of the visit."),
        Column("url", "string", "Page URL."),
        Column("referrer", "string", "Referring URL."),
        Column("revenue", "float64", "Revenue of the event (purchases), in `currency`."),
        Column("currency", "string", "ISO currency code of `revenue`."),
        Column("properties", "string", "Other properties as a JSON object."),
        Column("traits", "string", "identify/group traits as a JSON object."),
    ),
    aliases={
        "messageid": "message_id",
        "msg_id": "message_id",
        "id": "message_id",
        "event_id": "message_id",
        "timestamp": "ts",
        "time": "ts",
        "event_time": "ts",
        "datetime": "ts",
        "created_at": "ts",
        "date": "ts",
        "receivedat": "received_at",
        "userid": "user_id",
        "user": "user_id",
        "customer_id": "user_id",
        "anonymousid": "anonymous_id",
        "anon_id": "anonymous_id",
        "device_id": "anonymous_id",
        "cookie_id": "anonymous_id",
        "event_name": "event",
        "action": "event",
        "name": "event",
        "event_type": "event",
        "groupid": "account_id",
        "group_id": "account_id",
        "account": "account_id",
        "previousid": "previous_id",
        "source": "utm_source",
        "medium": "utm_medium",
        "campaign": "utm_campaign",
        "page_url": "url",
        "amount": "revenue",
        "value": "revenue",
        "props": "properties",
    },
)

PEOPLE = TableSpec(
    name="people",
    description="Traits of people (CRM export or identify calls), one row per import of a "
    "person's traits; the newest row per `user_id` wins.",
    key=("message_id",),
    columns=(
        Column("message_id", "string", "Dedupe key (hash of user_id and traits if absent).", True),
        Column("workspace", "string", "Workspace.", True),
        Column("user_id", "string", "Known id of the person.", True),
        Column("account_id", "string", "B2B account the person belongs to."),
        Column("ts", _TS, "When the traits were valid (UTC); import time if absent.", True),
        Column("traits", "string", "All other columns as a JSON object.", True),
    ),
    aliases={"userid": "user_id", "customer_id": "user_id", "id": "user_id", "person_id": "user_id",
             "groupid": "account_id", "group_id": "account_id", "timestamp": "ts", "updated_at": "ts"},
)

ACCOUNTS = TableSpec(
    name="accounts",
    description="Traits of B2B accounts (companies), newest row per `account_id` wins.",
    key=("message_id",),
    columns=(
        Column("message_id", "string", "Dedupe key.", True),
        Column("workspace", "string", "Workspace.", True),
        Column("account_id", "string", "Account id (Segment groupId).", True),
        Column("ts", _TS, "When the traits were valid (UTC).", True),
        Column("traits", "string", "All other columns as a JSON object.", True),
    ),
    aliases={"groupid": "account_id", "group_id": "account_id", "id": "account_id", "timestamp": "ts"},
)

IDENTITIES = TableSpec(
    name="identities",
    description="Derived identity graph: every id taking part in an identify/alias link or a "
    "group call, with the `person_id` it resolves to and the person's `account_id`. Ids not "
    "listed are their own person. Rebuilt after each import of events or people.",
    derived=True,
    key=("workspace", "id"),
    columns=(
        Column("workspace", "string", "Workspace.", True),
        Column("id", "string", "An anonymous_id or user_id.", True),
        Column("person_id", "string", "The person the id belongs to (root of its link chain).", True),
        Column("account_id", "string", "Account of the person (latest group call)."),
    ),
)

TOUCHES = TableSpec(
    name="touches",
    description="Derived cache of the resolved touches (track/page/screen events) with `person_id` and the "
    "resolved `account_id` (see docs/adr/0002-materialised-touches.md). Rebuilt from `events` and "
    "`identities` by every identity rebuild; never written otherwise. Analyses read it only while it "
    "is fresh (its build count equals the workspace's event count), else they resolve at query time.",
    derived=True,
    key=("message_id",),
    columns=(
        *(Column(c.name, c.dtype, "Resolved: the event's own account, else its person's." if c.name == "account_id"
                 else c.description, c.required) for c in EVENTS.columns),
        Column("person_id", "string", "The person the touch belongs to (stitched)."),
    ),
)

COSTS = TableSpec(
    name="costs",
    description="Advertising spend, impressions and clicks per day, channel and campaign.",
    key=("message_id",),
    columns=(
        Column("message_id", "string", "Dedupe key (hash of date, channel, campaign if absent).", True),
        Column("workspace", "string", "Workspace.", True),
        Column("date", "date", "Day the costs were incurred.", True),
        Column("channel", "string", "Channel (must match events' channel to be joined).", True),
        Column("campaign", "string", "Campaign (matches utm_campaign)."),
        Column("spend", "float64", "Spend in `currency`.", True),
        Column("impressions", "int64", "Ad impressions."),
        Column("clicks", "int64", "Ad clicks."),
        Column("video_views", "int64", "Video views."),
        Column("currency", "string", "ISO currency code of `spend`."),
    ),
    aliases={"day": "date", "cost": "spend", "costs": "spend", "amount": "spend",
             "utm_campaign": "campaign", "campaign_name": "campaign", "source": "channel"},
)

SURVEYS = TableSpec(
    name="surveys",
    description="Survey answers (NPS 0-10, CSAT 1-5, CES 1-7) with optional comment.",
    key=("message_id",),
    columns=(
        Column("message_id", "string", "Dedupe key (hash of person, ts, kind if absent).", True),
        Column("workspace", "string", "Workspace.", True),
        Column("person", "string", "user_id or anonymous_id of the respondent.", True),
        Column("ts", _TS, "When the answer was given (UTC).", True),
        Column("kind", "string", "nps, csat or ces.", True),
        Column("score", "float64", "The score on the kind's scale.", True),
        Column("comment", "string", "Free-text comment (any language)."),
        Column("touchpoint", "string", "Touchpoint the survey refers to."),
        Column("stage", "string", "Journey stage the survey refers to, if known."),
    ),
    aliases={"user_id": "person", "userid": "person", "person_id": "person", "customer_id": "person",
             "timestamp": "ts", "time": "ts", "type": "kind", "survey": "kind", "rating": "score",
             "text": "comment", "feedback": "comment"},
)

QUARANTINE = TableSpec(
    name="quarantine",
    description="Rejected rows with the reason, never silently dropped.",
    columns=(
        Column("workspace", "string", "Workspace.", True),
        Column("target", "string", "Table the row was meant for.", True),
        Column("source", "string", "File path or endpoint the row came from.", True),
        Column("line", "int64", "Line (CSV/JSONL, 1-based, header = line 1) or row (Parquet, 1-based)."),
        Column("field", "string", "The offending field, if one."),
        Column("reason", "string", "Why the row was rejected.", True),
        Column("raw", "string", "The row as received (JSON text, capped)."),
        Column("received_at", _TS, "When it was rejected.", True),
    ),
)

COHORTS = TableSpec(
    name="cohorts",
    description="Named cohorts: saved sets of persons (e.g. who dropped off at a funnel step), "
    "usable as breakdowns and filters. Saving a cohort again replaces its members.",
    key=("workspace", "name", "person_id"),
    columns=(
        Column("workspace", "string", "Workspace.", True),
        Column("name", "string", "Cohort name.", True),
        Column("person_id", "string", "A member (resolved person id).", True),
        Column("created_at", _TS, "When the cohort was saved.", True),
        Column("definition", "string", "How it was made (JSON: analysis and parameters)."),
    ),
)

KEYS = TableSpec(
    name="keys",
    description="API keys of the collector server. Only the SHA-256 of a key is stored; the key "
    "itself is shown once when it is created. `write` keys send events to their workspace, `read` "
    "keys query it, `admin` keys also manage keys, links and people (forget/export).",
    key=("key_id",),
    columns=(
        Column("key_id", "string", "Public id of the key (shown in lists, used to revoke).", True),
        Column("workspace", "string", "Workspace the key belongs to.", True),
        Column("kind", "string", "write, read or admin.", True),
        Column("key_hash", "string", "SHA-256 (hex) of the key.", True),
        Column("label", "string", "Free-text note."),
        Column("created_at", _TS, "When the key was created.", True),
        Column("revoked_at", _TS, "When the key was revoked (NULL: active)."),
    ),
)

LINKS = TableSpec(
    name="links",
    description="Redirect / QR links for offline touchpoints: `GET /r/{code}` records a touch at "
    "`touchpoint` and redirects to `url` (with the UTM fields appended).",
    key=("code",),
    columns=(
        Column("code", "string", "Short code in the link (`/r/{code}`).", True),
        Column("workspace", "string", "Workspace the touches are recorded in.", True),
        Column("touchpoint", "string", "Touchpoint key of the printed medium (e.g. flyer_berlin).", True),
        Column("channel", "string", "Channel of the recorded touch (default qr).", True),
        Column("url", "string", "Target URL of the redirect.", True),
        Column("utm_source", "string", "UTM source added to the touch and the target URL."),
        Column("utm_medium", "string", "UTM medium added to the touch and the target URL."),
        Column("utm_campaign", "string", "UTM campaign added to the touch and the target URL."),
        Column("utm_content", "string", "UTM content added to the touch and the target URL."),
        Column("utm_term", "string", "UTM term added to the touch and the target URL."),
        Column("created_at", _TS, "When the link was created.", True),
    ),
)

SUPPRESSIONS = TableSpec(
    name="suppressions",
    description="Ids of forgotten persons (GDPR erasure), stored as SHA-256 of workspace and id, so "
    "later events of these ids are dropped by the collector without keeping the id itself.",
    key=("workspace", "id_hash"),
    columns=(
        Column("workspace", "string", "Workspace.", True),
        Column("id_hash", "string", "SHA-256 hex of `workspace` + NUL + the id.", True),
        Column("created_at", _TS, "When the person was forgotten.", True),
    ),
)

META = TableSpec(
    name="journeylens_meta",
    description="Key/value facts about the store, e.g. `schema_version`.",
    columns=(
        Column("key", "string", "Name.", True),
        Column("value", "string", "Value.", True),
    ),
)

TABLES: dict[str, TableSpec] = {
    t.name: t
    for t in (EVENTS, PEOPLE, ACCOUNTS, IDENTITIES, TOUCHES, COSTS, SURVEYS, QUARANTINE, COHORTS, KEYS, LINKS,
              SUPPRESSIONS, META)
}
IMPORTABLE = {"events": EVENTS, "people": PEOPLE, "accounts": ACCOUNTS, "costs": COSTS, "surveys": SURVEYS}


def schema_markdown() -> str:
    """The schema reference as Markdown (docs/schema.md is generated from this)."""
    lines = ["# journeylens tables", "", f"Schema version {SCHEMA_VERSION}. Generated from "
             "`src/journeylens/schema.py`; do not edit by hand.", ""]
    for spec in TABLES.values():
        lines += [f"## `{spec.name}`", "", spec.description, ""]
        lines += ["| column | type | required | meaning |", "|---|---|---|---|"]
        for c in spec.columns:
            lines.append(f"| `{c.name}` | {c.dtype} | {'yes' if c.required else ''} | {c.description} |")
        if spec.aliases:
            al = ", ".join(f"`{k}`→`{v}`" for k, v in sorted(spec.aliases.items()))
            lines += ["", f"Source column names recognised automatically: {al}."]
        lines.append("")
    return "\n".join(lines)
