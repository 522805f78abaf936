"""HTTP ops as data: parsing and checking --url and its settings, templates, requests, SSE boundaries."""

import pytest

from loadgen import options as opts
from loadgen.errors import UsageError
from loadgen.http.client import HttpOp, Pool, Stats
from loadgen.http.spec import build, fill, parse_expect, split_item, url_value
from loadgen.http.sse import EventSplitter


@pytest.mark.parametrize("text, expected", [
    ("http://h/x", (None, None, "http://h/x", None)),
    ("GET http://h/x@9", (None, "GET", "http://h/x", 9)),
    ("POST  http://h:8080/drafts@1", (None, "POST", "http://h:8080/drafts", 1)),
    ("http://user@h/x", (None, None, "http://user@h/x", None)),  # an @ that is no weight
    ("read drafts=GET http://h/x?a=1@3", ("read drafts", "GET", "http://h/x?a=1", 3)),
    ("http://h/x?a=1", (None, None, "http://h/x?a=1", None)),  # an = after the scheme is the query's
])
def test_split_item(text, expected):
    assert split_item(text, "--url") == expected


@pytest.mark.parametrize("url, method, message", [
    ("127.0.0.1:8080/x", None, "expected http:// or https://"),
    ("http:///x", None, "no host"),
    ("ftp://h/x", None, "expected http:// or https://"),
    ("http://h/x", "FETCH", "unknown HTTP method 'FETCH'"),
    ("http://{host}/x", None, "the host cannot be a template"),
    ("http://u:p@h/x", None, "credentials in the URL"),
    ("http://h:99999/", None, "Port out of range"),
    ("http://h/a b", None, "no spaces"),
])
def test_bad_urls_are_usage_errors(url, method, message):
    with pytest.raises(UsageError, match=message):
        build(url, "--url", method=method)


@pytest.mark.parametrize("header, message", [
    ("nocolon", "expected \"Name: value\""),
    ("Bad Name: v", "expected \"Name: value\""),
    ("X: a\nb", "no line breaks"),
    ("Content-Length: 5", "frames the body itself"),
])
def test_bad_headers(header, message):
    with pytest.raises(UsageError, match=message):
        build("http://h/", "--url", headers=[header])


def test_json_body_is_checked_with_its_places_filled():
    spec = build("http://h/drafts", "--url", json_text='{"id": {id}, "title": "{title}"}')
    assert spec.method == "POST" and spec.json_body
    assert ("Content-Type", "application/json") in spec.headers
    with pytest.raises(UsageError, match="not JSON"):
        build("http://h/", "--url", json_text="{bad")
    with pytest.raises(UsageError, match="a body or json, not both"):
        build("http://h/", "--url", body="x", json_text="{}")


def test_expect_status_ranges():
    assert parse_expect("200,201,300-399", "w") == ((200, 200), (201, 201), (300, 399))
    spec = build("http://h/", "w", expect_status="200,404")
    assert spec.succeeded(404) and not spec.succeeded(201)
    default = build("http://h/", "w")
    assert default.succeeded(399) and not default.succeeded(400) and not default.succeeded(503)
    for bad in ("99", "600", "300-200", "x", ""):
        with pytest.raises(UsageError):
            parse_expect(bad, "w")


def test_name_is_the_template_not_the_filled_url():
    spec = build("http://127.0.0.1:8080/drafts/{id}?full=1", "--url")
    assert spec.name == "GET /drafts/{id}?full=1"
    assert spec.fields == {"id"}
    assert spec.authority == "127.0.0.1:8080"
    assert build("https://example.test/", "w").authority == "example.test"


def test_fill_encodes_what_a_url_cannot_hold():
    assert fill("/drafts/{id}", {"id": 7}) == "/drafts/7"
    assert fill("/q/{q}", {"q": "a b/ä"}, url_value) == "/q/a%20b/%C3%A4"
    with pytest.raises(KeyError):
        fill("/drafts/{id}", {"other": 1})


def test_request_bytes():
    op = HttpOp.__new__(HttpOp)
    op.spec = build("http://127.0.0.1:8080/drafts/{id}", "w", method="PUT", headers=["X-Trace: t-{id}"],
                    json_text='{"id": {id}, "t": "{t}"}')
    raw = op.render({"id": 5, "t": 'say "hi"'})
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"PUT /drafts/5 HTTP/1.1"
    assert b"Host: 127.0.0.1:8080" in lines and b"X-Trace: t-5" in lines
    assert body == b'{"id": 5, "t": "say \\"hi\\""}'
    assert f"Content-Length: {len(body)}".encode() in lines


def test_url_options_make_a_mix_of_http_ops():
    layer = opts.from_flags({"url": ["GET http://h:1/drafts/{id}@9", "POST http://h:1/drafts@1"],
                             "header": ["Authorization: Bearer x"], "json": '{"t": 1}'})
    ops = opts.http_ops(layer)
    assert [(op.name, op.weight) for op in ops] == [("GET /drafts/{id}", 9), ("POST /drafts", 1)]
    named = opts.http_ops(opts.from_flags({"url": ["read=http://h:1/drafts/{id}"]}))
    assert named[0].name == "read" and named[0].http.target == "/drafts/{id}"
    assert all(("Authorization", "Bearer x") in op.http.headers for op in ops)


def test_url_and_target_at_one_level_is_refused():
    with pytest.raises(UsageError, match="--url and --target"):
        opts.from_flags({"url": ["http://h/"], "target": ["m:f"]})


def test_http_setting_without_a_url_is_refused():
    with pytest.raises(UsageError, match="without --url"):
        opts.http_ops(opts.from_flags({"header": ["A: b"]}))


def test_a_flag_url_replaces_a_plans_target_and_its_headers():
    plan = opts.Layer({"target": "m:f", "headers": (("A", "b"),)})
    merged = opts.merge(plan, opts.from_flags({"url": ["http://h/"]}))
    assert "target" not in merged and "headers" not in merged and merged["url"]


def test_plan_op_table():
    from loadgen.workload.mix import parse_mix

    ops = parse_mix([{"url": "http://h/drafts/{id}", "name": "read", "weight": 9, "expect_status": [200, 404]},
                     {"url": "http://h/drafts", "method": "post", "json": {"t": 1}, "headers": {"X-A": "1"}}], "ops")
    assert ops[0].name == "read" and ops[0].weight == 9 and ops[0].http.succeeded(404)
    assert ops[1].name == "POST /drafts" and ops[1].http.body == '{"t": 1}'
    with pytest.raises(UsageError, match="unknown key 'verb'"):
        parse_mix([{"url": "http://h/", "verb": "GET"}], "ops")


def test_stats_take_resets():
    s = Stats()
    s.sent, s.opened = 10, 1
    assert s.take() == {"http_bytes_sent": 10, "http_connections_opened": 1}
    assert s.take() == {}


def test_pool_skips_connections_the_server_closed():
    pool = Pool("http", "h", 80, False, False, False)

    class C:
        def __init__(self, closed):
            self.closed, self.keep_alive = closed, True

        def abort(self):
            self.closed = True

    live, dead = C(False), C(True)
    pool.idle[:] = [live, dead]
    assert pool.take() is live and pool.idle == []


@pytest.mark.parametrize("chunks, events", [
    ([b"data: a\n\ndata: b\n\n"], 2),
    ([b"data: a\n", b"\ndata: b\r\n\r", b"\n"], 2),  # boundaries split across reads
    ([b": keep-alive\n\n", b"data: a\n\n"], 1),  # a comment block is no event
    ([b"event: x\ndata: y\n\n: c\n\n"], 1),
    ([b"data: a"], 0),  # unfinished
])
def test_sse_boundaries(chunks, events):
    sp = EventSplitter()
    for i, c in enumerate(chunks):
        sp.feed(c, i)
    assert len(sp.times_ns) == events


@pytest.mark.parametrize("text, status, headers, body, passed", [
    ("status == 200", 200, {}, b"", True),
    ("status >= 400", 200, {}, b"", False),
    ("header Content-Type contains json", 200, {"content-type": "application/json"}, b"", True),
    ("header X-Id exists", 200, {}, b"", False),
    ("json .state == \"finalized\"", 200, {}, b'{"state": "finalized"}', True),
    ("json .state == finalized", 200, {}, b'{"state": "failed"}', False),
    ("json .items[1].id == 7", 200, {}, b'{"items": [{"id": 1}, {"id": 7}]}', True),
    ("json .items[5] exists", 200, {}, b'{"items": []}', False),
    ("json $ contains ok", 200, {}, b'"all ok"', True),
    ("json .n > 2", 200, {}, b'{"n": "x"}', False),  # a type mismatch is a fail, not an error
    ("json .a exists", 200, {}, b"not json", False),
    ("body contains title", 200, {}, b'{"title": 1}', True),
])
def test_checks(text, status, headers, body, passed):
    from loadgen.http.spec import parse_check

    assert parse_check(text, "--check").passed(status, headers, body) is passed


@pytest.mark.parametrize("text", ["", "status = 200", "status == ok", "header", "header Bad:Name exists",
                                  "json state ==", "json .a[x] exists", "body has x", "cookie x"])
def test_bad_checks_are_usage_errors(text):
    from loadgen.http.spec import parse_check

    with pytest.raises(UsageError):
        parse_check(text, "--check")
