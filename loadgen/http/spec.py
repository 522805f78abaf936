"""What an HTTP op is, parsed and checked in the master: exit 2 before any load for what cannot work.

An op is a method, a URL, headers and a body — each a *template* whose ``{field}`` places are filled
from the ``--inputs`` record of each operation (``/drafts/{id}``) — and the statuses that count as
success (by default every status below 400). Its name, in reports and criteria, is the template,
``GET /drafts/{id}``, never a filled URL: one histogram per endpoint, as Locust's ``name=``.

On the command line (every ``--url`` takes the run's ``--method``, ``--header``, ``--body``/``--json``
and ``--expect-status``; a method inside the ``--url`` wins over ``--method``)::

    --url http://127.0.0.1:8080/drafts                    # GET
    --url 'GET http://127.0.0.1:8080/drafts/{id}@9' --url 'POST http://127.0.0.1:8080/drafts@1'

and in a plan, ``[[scenario.ops]]`` tables with ``url``, ``method``, ``headers``, ``json`` or
``body``, ``expect_status``, ``name``, ``weight``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from ..errors import UsageError

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
MAX_BODY_BYTES = 64 * 1024 * 1024  # a request body (or a --body @FILE): more is not a load test's request
MAX_NAME_CHARS = 100
FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")  # a template's place: {id}; JSON's braces never match
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110 token)
_STATUS = re.compile(r"^\s*([1-5][0-9][0-9])\s*(?:-\s*([1-5][0-9][0-9])\s*)?$")
_RESERVED_HEADERS = ("content-length", "transfer-encoding")  # loadgen frames the body itself
# Characters a URL may hold as they are; anything else in a filled value is percent-encoded.
_URL_SAFE = "/:@!$&'()*+,;=-._~?"


@dataclass(frozen=True)
class HttpSpec:
    """One HTTP op. ``target``: the path and query template (``/drafts/{id}?full=1``); ``headers``:
    ``((name, value template), …)``; ``body``: the body template (str) or None; ``expect``: inclusive
    status ranges that succeed (empty: every status below 400); ``insecure``: no TLS verification."""

    method: str
    url: str
    scheme: str
    host: str
    port: int
    target: str
    headers: tuple = ()
    body: str | None = None
    expect: tuple = ()
    insecure: bool = False
    json_body: bool = False
    checks: tuple = ()  # HttpCheck, …: counted as loadgen.check passes and fails, the op not failed

    @property
    def reads_response(self):
        """True when the checks need the response's headers or body (kept, bounded)."""
        return bool(self.checks)

    @property
    def name(self):
        """What reports and criteria call this op: ``GET /drafts/{id}``."""
        return f"{self.method} {self.target}"

    @property
    def fields(self):
        """The record fields the templates use (empty: one request, built once)."""
        text = self.target + "".join(v for _, v in self.headers) + (self.body or "")
        return frozenset(FIELD.findall(text))

    @property
    def authority(self):
        """``host[:port]`` as the Host header carries it (the port only when not the scheme's default)."""
        default = 443 if self.scheme == "https" else 80
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def accepts_events(self):
        """True when the request accepts ``text/event-stream``: its responses are read as SSE."""
        return any(k.lower() == "accept" and "text/event-stream" in v.lower() for k, v in self.headers)

    def succeeded(self, status):
        """True when ``status`` counts as the op's success."""
        if not self.expect:
            return status < 400
        return any(lo <= status <= hi for lo, hi in self.expect)

    def describe(self):
        """The op as a report's ``target`` names it: ``GET http://127.0.0.1:8080/drafts/{id}``."""
        return f"{self.method} {self.url}"


CHECK_KINDS = ("status", "header", "json", "body")
_COMPARE = ("==", "!=", "<=", ">=", "<", ">")
MAX_KEPT_BODY = 1 << 20  # bytes of a response body kept for checks


@dataclass(frozen=True)
class HttpCheck:
    """One check of a response (``text`` is its name in reports): ``status >= 200``, ``header NAME
    exists|contains TEXT|== TEXT``, ``json PATH exists|== VALUE|!= VALUE|contains TEXT``, ``body contains
    TEXT``. PATH: ``.a.b[0]`` (``$`` is the document). VALUE: a JSON value (``"finalized"``, ``3``,
    ``true``), or the bare text as a string."""

    text: str
    kind: str
    subject: object  # header name (lower case), JSON path (tuple of keys and indices), or None
    op: str
    value: object

    def passed(self, status, headers, body):
        """Whether the response (``headers``: lower-case name → value; ``body``: bytes) passes."""
        if self.kind == "status":
            return _compare(status, self.op, self.value)
        if self.kind == "header":
            got = headers.get(self.subject)
            if self.op == "exists" or got is None:
                return got is not None
            return self.value in got if self.op == "contains" else _compare(got, self.op, self.value)
        if self.kind == "body":
            return self.value.encode() in body
        try:
            doc = json.loads(body)
            for key in self.subject:
                doc = doc[key]
        except (ValueError, KeyError, IndexError, TypeError):
            return False
        if self.op == "exists":
            return True
        if self.op == "contains":
            return self.value in (doc if isinstance(doc, (str, list, dict)) else str(doc))
        return _compare(doc, self.op, self.value)


def _compare(got, op, want):
    try:
        if op == "==":
            return got == want
        if op == "!=":
            return got != want
        return {"<": got < want, "<=": got <= want, ">": got > want, ">=": got >= want}[op]
    except TypeError:
        return False


_PATH_PART = re.compile(r"\.([A-Za-z_][A-Za-z0-9_-]*)|\[(\d+)\]|\[\"([^\"]*)\"\]")


def parse_check(text, where):
    """An :class:`HttpCheck` of ``text``; :class:`UsageError` naming the forms for anything else."""
    forms = ("status >= 200, header NAME exists|contains TEXT|== TEXT, json .PATH exists|== VALUE|contains "
             "TEXT, body contains TEXT")
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"{where}: check: expected one of: {forms}")
    kind, _, rest = text.strip().partition(" ")
    rest = rest.strip()
    if kind == "status":
        op, _, value = rest.partition(" ")
        if op not in _COMPARE or not value.strip().isdigit():
            raise UsageError(f"{where}: check {text!r}: expected status OP NUMBER (OP: {' '.join(_COMPARE)})")
        return HttpCheck(text, kind, None, op, int(value))
    if kind == "body":
        op, _, value = rest.partition(" ")
        if op != "contains" or not value:
            raise UsageError(f"{where}: check {text!r}: expected body contains TEXT")
        return HttpCheck(text, kind, None, op, _literal(value, str))
    if kind in ("header", "json"):
        subject, _, tail = rest.partition(" ")
        op, _, value = tail.strip().partition(" ")
        if not subject or op not in _COMPARE + ("exists", "contains") or (op != "exists") != bool(value.strip()):
            raise UsageError(f"{where}: check {text!r}: expected {kind} {'NAME' if kind == 'header' else '.PATH'} "
                             "exists, contains TEXT or OP VALUE")
        if kind == "header":
            if not _TOKEN.match(subject):
                raise UsageError(f"{where}: check {text!r}: {subject!r} is not a header name")
            return HttpCheck(text, kind, subject.lower(), op, _literal(value.strip(), str) if value else None)
        return HttpCheck(text, kind, _json_path(subject, text, where), op,
                         _literal(value.strip(), None) if value else None)
    raise UsageError(f"{where}: check {text!r}: expected one of: {forms}")


def _literal(text, kind):
    """A check's value: JSON if it parses (``"a b"``, ``3``, ``true``), else the text itself."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return str(value) if kind is str and not isinstance(value, str) else value


def _json_path(path, text, where):
    path = path[1:] if path.startswith("$") else path
    if path and not path.startswith((".", "[")):
        path = "." + path
    parts, pos = [], 0
    for m in _PATH_PART.finditer(path):
        if m.start() != pos:
            break
        parts.append(m.group(1) if m.group(1) is not None else int(m.group(2)) if m.group(2) is not None
                     else m.group(3))
        pos = m.end()
    if pos != len(path):
        raise UsageError(f"{where}: check {text!r}: a JSON path such as .state, .items[0].id or $ (the document)")
    return tuple(parts)


def split_item(text, where):
    """``(name or None, method or None, url, weight or None)`` of ``"[NAME=][METHOD ]URL[@WEIGHT]"``
    (a name is what stands before an ``=`` ahead of the URL's ``://``, as ``--target NAME=MOD:fn``)."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"{where}: expected \"[NAME=][METHOD ]URL[@WEIGHT]\", got {text!r}")
    text = text.strip()
    name = None
    scheme_at = text.find("://")
    eq = text.find("=")
    if 0 <= eq < scheme_at:
        name, text = text[:eq].strip(), text[eq + 1:].strip()
    weight = None
    head, at, tail = text.rpartition("@")
    if at and tail.isdigit() and "/" not in tail:
        text, weight = head.strip(), int(tail)
    method = None
    first, _, rest = text.partition(" ")
    if rest.strip() and "://" not in first:
        method, text = first, rest.strip()
    return name, method, text, weight


def build(url, where, method=None, headers=(), body=None, json_text=None, expect_status=None, insecure=False,
          checks=()):
    """An :class:`HttpSpec` from its parts, every one checked; :class:`UsageError` naming ``where``."""
    method = (method or ("POST" if body is not None or json_text is not None else "GET"))
    if not isinstance(method, str) or method.upper() not in METHODS:
        raise UsageError(f"{where}: unknown HTTP method {method!r} (one of {', '.join(METHODS)})")
    method = method.upper()
    scheme, host, port, target = _split_url(url, where)
    hdrs = tuple(parse_header(h, where) for h in headers) if not isinstance(headers, dict) else \
        tuple(parse_header(f"{k}: {v}", where) for k, v in headers.items())
    if body is not None and json_text is not None:
        raise UsageError(f"{where}: give a body or json, not both")
    json_body = json_text is not None
    if json_body:
        body = json_text if isinstance(json_text, str) else json.dumps(json_text)
        # A template's places may stand where a value does ({"id": {id}}): check the JSON with them filled.
        try:
            json.loads(FIELD.sub("0", body))
        except ValueError as e:
            raise UsageError(f"{where}: the json body is not JSON ({e.msg} at character {e.pos})") from None
        if not any(k.lower() == "content-type" for k, _ in hdrs):
            hdrs += (("Content-Type", "application/json"),)
    elif body is not None:
        if not isinstance(body, str):
            raise UsageError(f"{where}: body: expected a string, got {type(body).__name__}")
        if body.startswith("@"):
            body = _read_body(body[1:], where)
    if body is not None and len(body.encode()) > MAX_BODY_BYTES:
        raise UsageError(f"{where}: the body has more than {MAX_BODY_BYTES // 2**20} MiB")
    if isinstance(checks, str):
        checks = [checks]
    if not isinstance(checks, (list, tuple)):
        raise UsageError(f"{where}: checks: expected a list of checks such as \"status == 200\"")
    spec = HttpSpec(method, url.strip(), scheme, host, port, target, hdrs, body, parse_expect(expect_status, where),
                    bool(insecure), json_body, tuple(c if isinstance(c, HttpCheck) else parse_check(c, where)
                                                     for c in checks))
    if len(spec.name) > MAX_NAME_CHARS:
        raise UsageError(f"{where}: the op's name {spec.name[:40]!r}… is longer than {MAX_NAME_CHARS} characters: "
                         "give it a shorter name (name = \"…\" in a plan)")
    return spec


def _split_url(url, where):
    if not isinstance(url, str) or not url.strip():
        raise UsageError(f"{where}: expected a URL such as http://127.0.0.1:8080/path, got {url!r}")
    url = url.strip()
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise UsageError(f"{where}: {url!r}: a URL has no spaces or control characters (percent-encode them)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise UsageError(f"{where}: {url!r}: {e}") from None
    if parts.scheme not in ("http", "https"):
        raise UsageError(f"{where}: {url!r}: expected http:// or https:// (a scheme and a host), "
                         f"e.g. http://127.0.0.1:8080/path")
    if not parts.hostname:
        raise UsageError(f"{where}: {url!r}: no host (expected http://HOST[:PORT]/path)")
    if FIELD.search(parts.netloc):
        raise UsageError(f"{where}: {url!r}: the host cannot be a template (only the path, query and headers)")
    if parts.username or parts.password:
        raise UsageError(f"{where}: {url!r}: credentials in the URL are not sent; use --header 'Authorization: …'")
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    port = port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, parts.hostname, port, target


def parse_header(text, where):
    """``(name, value)`` of ``"Name: value"``; :class:`UsageError` for anything else."""
    if not isinstance(text, str):
        raise UsageError(f"{where}: header: expected \"Name: value\", got {text!r}")
    name, colon, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not colon or not _TOKEN.match(name):
        raise UsageError(f"{where}: header {text!r}: expected \"Name: value\" (a name of letters, digits and - _)")
    if any(ch in value for ch in "\r\n\x00"):
        raise UsageError(f"{where}: header {name!r}: a value has no line breaks")
    if name.lower() in _RESERVED_HEADERS:
        raise UsageError(f"{where}: header {name!r}: loadgen frames the body itself (Content-Length)")
    return name, value


def parse_expect(value, where):
    """Status ranges of ``"200,201,300-399"`` (or a list of ints / such strings); () for None."""
    if value is None:
        return ()
    items = value if isinstance(value, (list, tuple)) else str(value).split(",")
    out = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise UsageError(f"{where}: expect_status: expected statuses such as 200,201,300-399, got {item!r}")
        m = _STATUS.match(str(item))
        if not m or (m.group(2) and int(m.group(2)) < int(m.group(1))):
            raise UsageError(f"{where}: expect_status {item!r}: expected a status (100–599) or a range 200-299")
        out.append((int(m.group(1)), int(m.group(2) or m.group(1))))
    if not out:
        raise UsageError(f"{where}: expect_status: no status given")
    return tuple(out)


def _read_body(path, where):
    from ..streams import read_bounded

    try:
        return read_bounded(path, MAX_BODY_BYTES, "request body").decode()
    except UnicodeDecodeError:
        raise UsageError(f"{where}: body @{path}: not UTF-8 text") from None


def fill(template, record, encode=None):
    """``template`` with each ``{field}`` replaced by ``record[field]`` (``encode`` applied to the value);
    a field the record lacks raises :class:`KeyError` naming it (the operation's failure)."""
    def one(m):
        value = record[m.group(1)] if isinstance(record, dict) else _missing(m.group(1))
        text = value if isinstance(value, str) else json.dumps(value) if not isinstance(value, (int, float)) \
            else str(value)
        return encode(text) if encode else text
    return FIELD.sub(one, template)


def _missing(field):
    raise KeyError(field)


def url_value(text):
    """A record's value as it may stand in a URL: characters a URL cannot hold percent-encoded."""
    return quote(text, safe=_URL_SAFE)


def json_value(text):
    """A record's value as it may stand inside a JSON string: escaped."""
    return json.dumps(text)[1:-1]


def check_fields(spec, record, where):
    """:class:`UsageError` when the first ``--inputs`` record lacks a field the templates use."""
    missing = sorted(f for f in spec.fields if not isinstance(record, dict) or f not in record)
    if missing:
        keys = ", ".join(map(str, record)) if isinstance(record, dict) else type(record).__name__
        raise UsageError(f"{where}: {spec.name}: the template names {{{missing[0]}}}, which the first --inputs "
                         f"record ({keys}) does not have")
