"""The collector over real HTTP (uvicorn on a thread): endpoints, auth, limits, privacy, links."""

from __future__ import annotations

import gzip
import json
import random
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server.conftest import ThreadServer

Live = tuple[ThreadServer, dict[str, str]]


def _post(srv: ThreadServer, path: str, body: Any, key: str | None = None, *, raw: bytes | None = None,
          headers: dict[str, str] | None = None, colon: bool = True) -> httpx.Response:
    h = {"content-type": "application/json", **(headers or {})}
    if key is not None:
        import base64

        h["authorization"] = "Basic " + base64.b64encode((key + (":" if colon else "")).encode()).decode()
    data = raw if raw is not None else json.dumps(body).encode()
    return httpx.post(srv.url + path, content=data, headers=h, timeout=30)


def _mid() -> str:
    return str(uuid.uuid4())


def _count(srv: ThreadServer, ws: str, mids: list[str]) -> int:
    rows = srv.query(f"SELECT count(*) FROM events WHERE workspace = ? AND message_id IN "
                     f"({', '.join('?' * len(mids))})", [ws, *mids])
    return int(rows[0][0])


def test_batch_stores_valid_messages_and_quarantines_invalid_ones(live: Live) -> None:
    srv, keys = live
    ids = [_mid() for _ in range(6)]
    batch = [
        {"type": "track", "event": "visit", "userId": "u1", "messageId": ids[0], "timestamp": "2024-05-01T10:00:00Z",
         "properties": {"touchpoint": "shop", "revenue": 12.5}},
        {"type": "track", "event": "visit", "userId": "u1", "messageId": ids[1], "properties": {"revenue": "abc"}},
        {"type": "track", "anonymousId": "a1", "messageId": ids[2]},  # no event
        {"type": "page", "name": "Home", "anonymousId": "a1", "messageId": ids[3]},
        {"type": "identify", "userId": "u1", "anonymousId": "a1", "messageId": ids[4], "traits": {"plan": "pro"}},
        {"type": "track", "event": "x", "messageId": ids[5]},  # no ids
    ]
    r = _post(srv, "/v1/batch", {"batch": batch, "context": {"campaign": {"source": "google", "medium": "cpc"}}},
              keys["wa"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True and body["accepted"] == 3 and body["duplicates"] == 0
    assert body["quarantined"] == [{"index": 1, "reason": "not numeric"}, {"index": 2, "reason": "track needs event"},
                                   {"index": 5, "reason": "missing user_id and anonymous_id"}]
    rows = srv.query("SELECT message_id, type, event, touchpoint, revenue, utm_source, utm_medium, channel, ts, "
                     "received_at FROM events WHERE workspace = 'A' AND message_id IN (?, ?, ?) ORDER BY type",
                     [ids[0], ids[3], ids[4]])
    by = {r[0]: r for r in rows}
    assert by[ids[0]][1:8] == ("track", "visit", "shop", 12.5, "google", "cpc", "paid_search")
    assert by[ids[3]][1:3] == ("page", "Home")
    assert by[ids[4]][1:3] == ("identify", "identify")
    assert by[ids[0]][8].isoformat().startswith("2024-05-01T10:00:00")  # no sentAt: no skew correction
    q = srv.query("SELECT line, reason, source FROM quarantine WHERE workspace = 'A' AND contains(raw, ?)", [ids[1]])
    assert q == [(2, "not numeric", "http /v1/batch")]


def test_duplicates_by_message_id_are_counted_not_stored(live: Live) -> None:
    srv, keys = live
    m = _mid()
    first = _post(srv, "/v1/track", {"event": "visit", "userId": "u2", "messageId": m}, keys["wa"]).json()
    again = _post(srv, "/v1/batch", {"batch": [{"type": "track", "event": "visit", "userId": "u2", "messageId": m},
                                               {"type": "track", "event": "visit", "userId": "u2", "messageId": m}]},
                  keys["wa"]).json()
    assert (first["accepted"], first["duplicates"]) == (1, 0)
    assert (again["accepted"], again["duplicates"]) == (0, 2)
    assert _count(srv, "A", [m]) == 1
    # the same messageId in another workspace is a different event
    other = _post(srv, "/v1/track", {"event": "visit", "userId": "u2", "messageId": m}, keys["wb"]).json()
    assert other["accepted"] == 1 and _count(srv, "B", [m]) == 1


def test_short_paths_text_plain_gzip_and_missing_message_id(live: Live) -> None:
    srv, keys = live
    body = json.dumps({"event": "signup", "anonymousId": "a9", "writeKey": keys["wa"]}).encode()
    r = _post(srv, "/v1/t", None, raw=body, headers={"content-type": "text/plain"})
    assert r.status_code == 200 and r.json()["accepted"] == 1
    z = gzip.compress(json.dumps({"batch": [{"type": "screen", "name": "S", "userId": "u3", "messageId": "g1"}]}).encode())
    r = _post(srv, "/v1/b", None, keys["wa"], raw=z, headers={"content-encoding": "gzip"})
    assert r.status_code == 200 and r.json()["accepted"] == 1
    rows = srv.query("SELECT message_id FROM events WHERE workspace='A' AND event = 'signup' AND anonymous_id='a9'")
    assert len(rows) == 1 and uuid.UUID(rows[0][0]).version == 4  # a server UUID


def test_clock_skew_is_corrected_with_sent_at(live: Live) -> None:
    srv, keys = live
    m = _mid()
    # the client clock is 1 h ahead: it says sentAt 11:00 for an event 1 minute earlier
    _post(srv, "/v1/track", {"event": "visit", "userId": "u4", "messageId": m, "timestamp": "2030-01-01T10:59:00Z",
                             "sentAt": "2030-01-01T11:00:00Z"}, keys["wa"])
    ts, received = srv.query("SELECT ts, received_at FROM events WHERE message_id = ?", [m])[0]
    assert abs((received - ts).total_seconds() - 60) < 0.01


def test_identity_stitching_applies_to_live_events(live: Live) -> None:
    srv, keys = live
    _post(srv, "/v1/batch", {"batch": [
        {"type": "track", "event": "visit", "anonymousId": "anon-st", "messageId": _mid()},
        {"type": "identify", "anonymousId": "anon-st", "userId": "user-st", "messageId": _mid()},
        {"type": "alias", "previousId": "old-st", "userId": "user-st", "messageId": _mid()},
    ]}, keys["wa"])
    import time

    for _ in range(100):  # rebuilt when the writer is idle (at most every 2 s)
        rows = srv.query("SELECT id, person_id FROM identities WHERE workspace='A' AND person_id='user-st'")
        if len(rows) >= 2:
            break
        time.sleep(0.1)
    assert sorted(r[0] for r in rows) == ["anon-st", "old-st"] or sorted(r[0] for r in rows) == \
        ["anon-st", "old-st", "user-st"]


@pytest.mark.parametrize("colon", [True, False])
def test_write_key_basic_with_or_without_colon(live: Live, colon: bool) -> None:
    srv, keys = live
    r = _post(srv, "/v1/track", {"event": "e", "userId": "u"}, keys["wa"], colon=colon)
    assert r.status_code == 200


def test_auth_failures(live: Live) -> None:
    srv, keys = live
    msg = {"event": "e", "userId": "u"}
    assert _post(srv, "/v1/track", msg).status_code == 401
    assert _post(srv, "/v1/track", msg, "jlw_nope").status_code == 401
    assert _post(srv, "/v1/track", {**msg, "writeKey": keys["wb"]}, keys["wa"]).json()["code"] == "write_key_mismatch"
    assert _post(srv, "/v1/track", msg, keys["ra"]).status_code == 403  # a read key cannot write
    # a write key cannot read
    r = httpx.get(srv.url + "/api/people/u", auth=(keys["wa"], ""))
    assert r.status_code == 403


def test_revoking_takes_effect_at_once(live: Live) -> None:
    srv, keys = live
    made = httpx.post(srv.url + "/api/keys", json={"kind": "write"}, auth=(keys["aa"], "")).json()
    assert _post(srv, "/v1/track", {"event": "e", "userId": "u"}, made["key"]).status_code == 200
    r = httpx.delete(srv.url + f"/api/keys/{made['key_id']}", auth=(keys["aa"], ""))
    assert r.status_code == 200 and r.json()["revoked_at"]
    assert _post(srv, "/v1/track", {"event": "e", "userId": "u"}, made["key"]).status_code == 401
    # B's admin cannot revoke A's keys
    assert httpx.delete(srv.url + "/api/keys/whatever", auth=(keys["ab"], "")).status_code == 404


def test_limits_and_unparseable_bodies(live: Live) -> None:
    srv, keys = live
    big = {"type": "track", "event": "big", "userId": "u", "messageId": _mid(), "properties": {"x": "y" * 33_000}}
    ok = {"type": "track", "event": "ok", "userId": "u", "messageId": _mid()}
    r = _post(srv, "/v1/batch", {"batch": [big, ok]}, keys["wa"])
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert r.json()["quarantined"] == [{"index": 0, "reason": "event larger than 32768 bytes"}]
    huge = {"batch": [{"type": "track", "event": "e", "userId": "u", "properties": {"x": "y" * 20_000}}] * 26}
    bodies: list[tuple[bytes, dict[str, str], str]] = [
        (json.dumps(huge).encode(), {}, "request_too_large"),
        (gzip.compress(b"{" + b" " * 2_000_000 + b"}"), {"content-encoding": "gzip"}, "request_too_large"),
        (gzip.compress(json.dumps(ok).encode())[:-6], {"content-encoding": "gzip"}, "invalid_gzip"),
        (b'{"event": "e", "userId": "\xff"}', {}, "invalid_utf8"),
        (b'{"event": "e", "userId": "u", "properties": {"x": NaN}}', {}, "invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, {}, "invalid_json"),
        (b'{"event": "e", "userId": "u"', {}, "invalid_json"),
        (b'{"event": "e", "userId": "u"}', {"content-type": "application/xml"}, "unsupported_content_type"),
        (b"", {}, "empty_body"),
        (b"[1, 2]", {}, "invalid_body"),
    ]
    for raw, headers, code in bodies:
        r = _post(srv, "/v1/track", None, keys["wa"], raw=raw, headers=headers)
        assert r.status_code == 400, (code, r.text)
        assert r.json()["code"] == code and r.json()["message"]
    n = srv.query("SELECT count(*) FROM quarantine WHERE workspace='A' AND line IS NULL AND source='http /v1/track'")
    assert n[0][0] >= len(bodies)  # raw bodies quarantined (capped)
    cap = srv.query("SELECT max(strlen(raw)) FROM quarantine WHERE workspace='A'")[0][0]
    assert cap <= 10 * 1024


def test_lone_surrogates_and_huge_numbers_are_quarantined(live: Live) -> None:
    srv, keys = live
    raw = (b'{"batch": [{"type": "track", "event": "e\\ud800", "userId": "u"},'
           b'{"type": "track", "event": "n", "userId": "u", "properties": {"revenue": 1e400}},'
           b'{"type": "track", "event": "ok", "userId": "u", "properties": {"big": 123456789012345678901234567890}}]}')
    r = _post(srv, "/v1/batch", None, keys["wa"], raw=raw)
    assert r.status_code == 400 or r.status_code == 200
    if r.status_code == 200:  # 1e400 parses as inf in Python: then the revenue is not numeric
        body = r.json()
        assert body["accepted"] == 1
        assert [q["index"] for q in body["quarantined"]] == [0, 1]


def test_cors_preflight(live: Live) -> None:
    srv, _ = live
    r = httpx.options(srv.url + "/v1/batch", headers={"Origin": "https://shop.example",
                                                     "Access-Control-Request-Method": "POST",
                                                     "Access-Control-Request-Headers": "content-type,authorization"})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] in ("*", "https://shop.example")


def test_tracking_posts_take_the_direct_route_with_cors_and_the_schema_stays(live: Live) -> None:
    """POST /v1/<endpoint> is answered by the direct ASGI route (same handler): CORS headers for browser
    calls, 404/405 for what is no tracking call, and the routes stay in the OpenAPI schema."""
    srv, keys = live
    m = _mid()
    r = _post(srv, "/v1/track", {"event": "cors", "userId": "u-cors", "messageId": m}, keys["wa"],
              headers={"Origin": "https://shop.example"})
    assert r.status_code == 200 and r.json()["accepted"] == 1
    assert r.headers["access-control-allow-origin"] in ("*", "https://shop.example")
    assert _count(srv, "A", [m]) == 1
    assert _post(srv, "/v1/nothing", {"event": "x"}, keys["wa"]).status_code == 404
    assert httpx.get(srv.url + "/v1/track", timeout=30).status_code == 405
    paths = httpx.get(srv.url + "/openapi.json", timeout=30).json()["paths"]
    assert {"/v1/track", "/v1/batch", "/v1/b"} <= set(paths) and "post" in paths["/v1/batch"]


def test_pixel_records_and_answers_a_gif(live: Live) -> None:
    srv, keys = live
    m = _mid()
    r = httpx.get(srv.url + "/t.gif", params={"writeKey": keys["wa"], "event": "email_open", "userId": "u-px",
                                              "messageId": m, "utm_campaign": "spring", "utm_source": "newsletter",
                                              "utm_medium": "email", "mail_id": "42"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/gif" and r.content[:6] == b"GIF89a"
    row = srv.query("SELECT event, user_id, utm_campaign, channel, properties FROM events WHERE message_id = ?", [m])
    assert row[0][:4] == ("email_open", "u-px", "spring", "email")
    assert json.loads(row[0][4]) == {"mail_id": "42"}
    assert httpx.get(srv.url + "/t.gif", params={"writeKey": "bad"}).status_code == 401


def test_redirect_link_records_a_touch_and_redirects(live: Live, tmp_path: Path) -> None:
    srv, keys = live
    made = httpx.post(srv.url + "/api/links", auth=(keys["aa"], ""),
                      json={"touchpoint": "flyer_berlin", "url": "https://shop.example/spring?x=1",
                            "utm_campaign": "spring", "utm_source": "flyer", "utm_medium": "print"})
    assert made.status_code == 201, made.text
    code = made.json()["code"]
    r = httpx.get(srv.url + f"/r/{code}", follow_redirects=False)
    assert r.status_code == 302
    assert r.headers["location"] == "https://shop.example/spring?x=1&utm_source=flyer&utm_medium=print&utm_campaign=spring"
    aid = r.cookies["jl_aid"]
    rows = srv.query("SELECT event, touchpoint, channel, utm_campaign, anonymous_id FROM events "
                     "WHERE workspace='A' AND event='link_visit' AND anonymous_id = ?", [aid])
    assert rows == [("link_visit", "flyer_berlin", "qr", "spring", aid)]  # stored before the 302
    assert httpx.get(srv.url + "/r/nope", follow_redirects=False).status_code == 404
    from journeylens.server.links import render_qr

    png = render_qr(f"{srv.url}/r/{code}", tmp_path / "qr.png")
    svg = render_qr(f"{srv.url}/r/{code}", tmp_path / "qr.svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and b"<svg" in svg.read_bytes()[:300]


def test_ip_addresses_are_anonymised_before_disk(live: Live) -> None:
    srv, keys = live
    m = _mid()
    _post(srv, "/v1/batch", {"batch": [
        {"type": "track", "event": "v", "userId": "u-ip", "messageId": m, "context": {"ip": "203.0.113.77"},
         "properties": {"ip": "2001:db8:abcd:12:1:2:3:4"}},
        {"type": "track", "userId": "u-ip", "context": {"ip": "198.51.100.23"}},  # quarantined (no event)
    ]}, keys["wa"])
    props = json.loads(srv.query("SELECT properties FROM events WHERE message_id = ?", [m])[0][0])
    assert props["ip"] == "2001:db8:abcd::"
    raw = srv.query("SELECT raw FROM quarantine WHERE contains(raw, '198.51.100.')")[0][0]
    assert "198.51.100.0" in raw and "198.51.100.23" not in raw
    _post(srv, "/v1/track", None, keys["wa"], raw=b'{"ip": "192.0.2.55", broken')
    assert srv.query("SELECT count(*) FROM quarantine WHERE contains(raw, '192.0.2.55')")[0][0] == 0
    assert srv.query("SELECT count(*) FROM quarantine WHERE contains(raw, '192.0.2.0')")[0][0] == 1


def test_no_consent_messages_are_counted_not_stored(live: Live) -> None:
    srv, keys = live
    m1, m2, m3 = _mid(), _mid(), _mid()
    r = _post(srv, "/v1/batch", {"batch": [
        {"type": "track", "event": "v", "userId": "u-c", "messageId": m1, "context": {"consent": False}},
        {"type": "track", "event": "v", "userId": "u-c", "messageId": m2,
         "context": {"consent": {"categoryPreferences": {"analytics": False}}}},
        {"type": "track", "event": "v", "userId": "u-c", "messageId": m3, "context": {"consent": {"analytics": True}}},
    ]}, keys["wa"]).json()
    assert r["accepted"] == 1 and r["not_stored"]["no_consent"] == 2
    assert _count(srv, "A", [m1, m2, m3]) == 1


def test_forget_removes_a_person_everywhere_and_suppresses_later_events(live: Live) -> None:
    srv, keys = live
    marker = "MARKER-" + uuid.uuid4().hex
    _post(srv, "/v1/batch", {"batch": [
        {"type": "track", "event": "visit", "anonymousId": "anon-gdpr", "messageId": _mid(),
         "properties": {"note": marker}},
        {"type": "identify", "anonymousId": "anon-gdpr", "userId": "gdpr-user", "messageId": _mid(),
         "traits": {"email": marker + "@example.com"}},
        {"type": "alias", "previousId": "gdpr-old", "userId": "gdpr-user", "messageId": _mid()},
        {"type": "track", "userId": "gdpr-user", "properties": {"note": marker}},  # quarantined
        {"type": "track", "event": "visit", "userId": "someone-else", "messageId": _mid()},
    ]}, keys["wa"])
    srv.query("SELECT 1")
    # the export lists the person's rows (also under the anonymous id before the identify)
    exp = httpx.get(srv.url + "/api/people/anon-gdpr", auth=(keys["ra"], "")).json()
    assert len(exp["tables"]["events"]) == 3 and len(exp["tables"]["quarantine"]) == 1
    r = httpx.delete(srv.url + "/api/people/gdpr-user", auth=(keys["aa"], ""))
    assert r.status_code == 200, r.text
    assert set(r.json()["ids"]) >= {"gdpr-user", "anon-gdpr", "gdpr-old"}
    for table, cols in _string_columns(srv).items():
        for col in cols:
            n = srv.query(f'SELECT count(*) FROM "{table}" WHERE contains("{col}", ?)', [marker])[0][0]
            assert n == 0, (table, col)
    assert srv.query("SELECT count(*) FROM events WHERE user_id='someone-else'")[0][0] == 1
    later = _post(srv, "/v1/track", {"event": "visit", "anonymousId": "anon-gdpr", "messageId": _mid()},
                  keys["wa"]).json()
    assert later["accepted"] == 0 and later["not_stored"]["suppressed"] == 1
    # B's admin cannot see or forget A's people
    assert httpx.get(srv.url + "/api/people/someone-else", auth=(keys["ab"], "")).json()["tables"]["events"] == []


def _string_columns(srv: ThreadServer) -> dict[str, list[str]]:
    from journeylens import schema

    return {t.name: [c.name for c in t.columns if c.dtype == "string"] for t in schema.TABLES.values()}


def test_isolation_random_requests_never_cross_workspaces(live: Live) -> None:
    srv, keys = live
    rnd = random.Random(5)
    sent: dict[str, set[str]] = {"A": set(), "B": set()}
    for _ in range(40):
        ws = rnd.choice(["A", "B"])
        key = keys["wa"] if ws == "A" else keys["wb"]
        batch = [{"type": "track", "event": "iso", "userId": f"iso-{rnd.randrange(5)}", "messageId": _mid()}
                 for _ in range(rnd.randrange(1, 5))]
        if rnd.random() < 0.3:  # a shared messageId in both workspaces
            batch.append({"type": "track", "event": "iso", "userId": "iso-shared", "messageId": "iso-shared-id"})
        how = rnd.choice(["basic", "body"])
        body: dict[str, Any] = {"batch": batch}
        if how == "body":
            body["writeKey"] = key
        r = _post(srv, "/v1/batch", body, key if how == "basic" else None)
        assert r.status_code == 200
        sent[ws] |= {m["messageId"] for m in batch}
    for ws in ("A", "B"):
        stored = {r[0] for r in srv.query("SELECT message_id FROM events WHERE workspace = ? AND event = 'iso'", [ws])}
        assert stored == sent[ws]
    exp = httpx.get(srv.url + "/api/people/iso-1", auth=(keys["ab"], "")).json()
    assert all(e["workspace"] == "B" for e in exp["tables"]["events"])


def test_metrics_and_healthz(live: Live) -> None:
    srv, keys = live
    # its own events: under pytest-xdist the module's tests (and servers) are split across workers
    sent = _post(srv, "/v1/batch", {"batch": [{"type": "track", "event": "m", "userId": "metrics", "messageId": _mid()}
                                              for _ in range(10)]}, keys["wa"]).json()
    assert sent["accepted"] == 10
    assert httpx.get(srv.url + "/healthz").json()["status"] == "ok"
    text = httpx.get(srv.url + "/metrics").text
    for name in ("journeylens_events_accepted_total", "journeylens_events_duplicates_total",
                 "journeylens_events_quarantined_total", "journeylens_queue_depth",
                 "journeylens_commit_seconds_bucket"):
        assert name in text
    accepted = next(float(x.split()[-1]) for x in text.splitlines() if x.startswith("journeylens_events_accepted_total"))
    assert accepted >= 10
