"""A test stand-in for the MRD storage server (https://github.com/ismrmrd/mrd-storage-server), in memory.

Gadgetron 4.x keeps state between connections (above all the noise covariance that ``NoiseAdjustGadget``
stores from a scan's noise lines and loads back for a later scan that names it as its ``Noise``
measurement dependency) in that server. Gadgetron only talks to it over HTTP, through
``Gadgetron::Storage::StorageClient`` (``core/Storage.cpp`` of Gadgetron 4.7.2); the Go server itself is
not on PyPI or in Debian. This module serves exactly the part of its API that client uses, on Python's
standard library (:class:`http.server.ThreadingHTTPServer` in a background thread, blobs kept in memory),
so a test can run the real ``gadgetron`` with ``--storage_address <url>`` instead of
``--disable_storage true``::

    with StorageServer() as storage:
        # gadgetron -p PORT --storage_address {storage.url} ...
        ...
        assert [b.name for b in storage.items] == ["noise_covariance"]

Endpoints (and what ``StorageClient`` sends to them):

``GET /healthcheck``
    ``health_check()``, which ``gadgetron`` calls at start-up (up to 50 times, 200 ms apart) when given
    ``--storage_address``. 200 with ``{"status": "OK"}``; 503 with ``{"status": "Service Unavailable",
    "errors": {...}}`` while :attr:`StorageServer.healthy` is false.
``POST /v1/blobs/data?subject=S[&device=D][&session=X][&name=N][&<custom>=V ...][&_ttl=<seconds>s]``
    ``store_item()``: the body is the blob (Gadgetron sends it with ``Transfer-Encoding: chunked``; a
    ``Content-Length`` body works too), its ``Content-Type`` header becomes ``contentType``. 201 with the
    blob's metadata (below); 400 with ``{"error": {"code", "message"}}`` when ``subject`` is missing or
    empty, a tag name is reserved or invalid, a value is longer than 128 characters, or ``_ttl`` is not a
    Go duration (``172800s``, ``1h30m``, ...) or is negative. ``StorageClient`` wants exactly 201.
``GET /v1/blobs/data/latest?subject=S[&device=...][&name=...][&<custom>=V ...][&_at=<RFC 3339>]``
    ``get_latest_item()``: the data of the newest unexpired blob whose tags match all the given ones,
    with the ``Location`` header (its metadata URL) and the tags as headers (``Content-Type``,
    ``Last-Modified``, ``Expires``, ``Mrd-Tag-Subject``, ``Mrd-Tag-Device``, ``Mrd-Tag-Name``,
    ``Mrd-Tag-Session``, ``Mrd-Tag-<Custom>``); 404 (``{"error": {"code": "EmptyResults", ...}}``) when
    none matches, which ``StorageClient`` reads as "no item" (NoiseAdjust then gathers noise itself).
``GET /v1/blobs?subject=S[&...tags][&_limit=N][&_at=...][&_ct=<token>]``
    ``list_items()`` (``_limit``, default 20 there, 100 here and at most 100) and
    ``get_next_page_of_items()``: ``{"items": [<metadata>, ...], "nextLink": "<url of the next page>"}``,
    newest first; ``nextLink`` only when there are more (the same query plus ``_ct``).
``GET /v1/blobs/<uuid>-<subject>`` and ``GET /v1/blobs/<uuid>-<subject>/data``
    the ``location`` and ``data`` links: a blob's metadata, or its data as for ``latest``
    (``get_item_by_url()``); 404 (empty body) when there is no such unexpired blob. As in the Go server,
    the data link still answers for 30 minutes after the blob expired.

Blob metadata, the JSON object ``storage_item_from_json()`` reads: ``subject``, ``device``, ``session``,
``name`` (the last three only when set), ``contentType`` (when the request had one), ``location``,
``data``, ``lastModified`` and ``expires`` (only with ``_ttl``) as RFC 3339 UTC with milliseconds,
e.g. ``2024-05-01T12:00:00.123Z``, which Gadgetron parses with ``date::parse("%FT%TZ")``, and every custom
tag as a string, or a list of strings when it has several values. Keys are sorted, as Go's encoder does.

Matching follows the Go server (``database/database.go``): tag names are case-insensitive (custom ones
are stored lower-case), values case-sensitive; ``subject``, ``device``, ``session`` and ``name`` must
equal the given value (a query naming ``device`` does not match a blob without one), and each given
custom value must be among the blob's values for that tag; tags the query does not name do not matter.
Expired blobs are never found by a search (they are kept in :attr:`StorageServer.items` for assertions;
the real server deletes them later).

Differences from the Go server, none of which ``StorageClient`` can see: two blobs stored in the same
millisecond are ordered by the order they were stored in (the Go server orders them by their random
UUIDs), the continuation token is this module's own, a ``/`` in a subject is percent-encoded in the
links, and nothing is persisted.

Every request is recorded (:attr:`StorageServer.requests`, :class:`Request`), as is every blob stored
(:attr:`StorageServer.items`, :class:`Blob`). Run as a script (``python tests/mrd_storage.py --port
3333``) it serves until interrupted and prints one line per request.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import re
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Callable, TextIO
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit

__all__ = ["Blob", "Request", "StorageServer", "parse_go_duration", "format_rfc3339_ms", "NULL_SUBJECT"]

#: The subject of blobs that belong to no patient (Gadgetron's ScannerSpace stores under it).
NULL_SUBJECT = "$null"
#: Tag names a blob may not be created with (``api/create.go``).
RESERVED_TAG_NAMES = frozenset({"location", "last-modified", "lastmodified", "content-type", "contenttype"})
#: Valid tag names (``api/create.go``; its ``|$null`` alternative can never match and is left out).
TAG_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9_\-]{0,63}")
MAX_TAG_VALUE_LENGTH = 128
#: ``_limit`` outside 1..100 (or not a number) means 100 (``api/search.go``).
MAX_PAGE_SIZE = 100
#: The ``.../data`` link still serves a blob this long after it expired (``api/api.go``).
DATA_GRACE_MS = 30 * 60 * 1000
SYSTEM_TAGS = ("subject", "device", "name", "session")
#: Query parameters of searches that are not tags.
SEARCH_PARAMETERS = ("_at", "_limit", "_ct")

_DURATION_UNITS_NS = {"ns": 1, "us": 10**3, "µs": 10**3, "μs": 10**3, "ms": 10**6, "s": 10**9, "m": 60 * 10**9,
                      "h": 3600 * 10**9}
_DURATION_PART = re.compile(r"(\d*)(?:\.(\d*))?(ns|us|µs|μs|ms|s|m|h)")
_RFC3339 = re.compile(r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})")


def parse_go_duration(text: str) -> float:
    """Seconds in a Go ``time.ParseDuration`` string (``"172800s"``, ``"1h30m"``, ``"-1.5h"``, ``"0"``).

    Raises:
        ValueError: not such a string.
    """
    sign, rest = 1, text
    if rest[:1] in ("+", "-"):
        sign, rest = (-1 if rest[0] == "-" else 1), rest[1:]
    if rest == "0":
        return 0.0
    if not rest:
        raise ValueError(f'time: invalid duration "{text}"')
    total_ns = 0.0
    pos = 0
    while pos < len(rest):
        m = _DURATION_PART.match(rest, pos)
        if m is None or (m.group(1) == "" and not m.group(2)):
            raise ValueError(f'time: invalid duration "{text}"')
        whole, frac, unit = m.group(1) or "0", m.group(2) or "", m.group(3)
        total_ns += (int(whole) + (int(frac) / 10 ** len(frac) if frac else 0.0)) * _DURATION_UNITS_NS[unit]
        pos = m.end()
    return sign * total_ns / 1e9


def format_rfc3339_ms(ms: int) -> str:
    """A time in milliseconds since the epoch as Go's ``time.RFC3339Nano`` in UTC (trailing zeros dropped)."""
    seconds, millis = divmod(ms, 1000)
    text = datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if millis:
        text += "." + f"{millis:03d}".rstrip("0")
    return text + "Z"


def parse_rfc3339_ms(text: str) -> int:
    """Milliseconds since the epoch of an RFC 3339 time (the ``_at`` parameter).

    Raises:
        ValueError: not RFC 3339.
    """
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise ValueError(f"not an RFC 3339 time: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    zone = m.group(8)
    if zone in ("Z", "z"):
        tz = timezone.utc
    else:
        offset = timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        tz = timezone(offset if zone[0] == "+" else -offset)
    stamp = datetime(year, month, day, hour, minute, second, tzinfo=tz).timestamp()
    frac = m.group(7) or ""
    return int(stamp) * 1000 + (int(frac[:3].ljust(3, "0")) if frac else 0)


def _http_date(ms: int) -> str:
    return formatdate(ms / 1000, usegmt=True)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _canonical_header(name: str) -> str:
    """Go's ``textproto.CanonicalMIMEHeaderKey``: ``mrd-tag-measurement`` -> ``Mrd-Tag-Measurement``."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


@dataclass
class Blob:
    """One stored blob: its tags, times and data (what ``POST /v1/blobs/data`` received)."""

    id: uuid.UUID
    subject: str
    device: str | None
    session: str | None
    name: str | None
    content_type: str | None
    #: Custom tags, names lower-case, values in the order given.
    custom_tags: dict[str, list[str]]
    #: Milliseconds since the epoch.
    created_ms: int
    expires_ms: int | None
    data: bytes
    #: Order of storing (breaks ties between blobs stored in the same millisecond).
    seq: int = 0

    @property
    def combined_id(self) -> str:
        """``<uuid>-<subject>``: the blob's path segment in its ``location`` and ``data`` links."""
        return f"{self.id}-{self.subject}"

    def tag(self, name: str) -> str | list[str] | None:
        """A tag's value (system tags: a string or None; custom: the list of values, None if absent)."""
        name = name.lower()
        if name in SYSTEM_TAGS:
            return getattr(self, name)
        return self.custom_tags.get(name)

    def expired(self, now_ms: int, grace_ms: int = 0) -> bool:
        return self.expires_ms is not None and self.expires_ms <= now_ms - grace_ms

    def matches(self, query: dict[str, list[str]]) -> bool:
        """True when every tag in ``query`` (lower-case names) matches, as the Go server's search does."""
        for key, values in query.items():
            if key in SYSTEM_TAGS:
                if any(getattr(self, key) != v for v in values):
                    return False
            elif any(v not in self.custom_tags.get(key, []) for v in values):
                return False
        return True


@dataclass
class Request:
    """One request the server answered."""

    method: str
    #: The path, without the query.
    path: str
    #: The query parameters as sent (names as sent, values decoded, in order).
    query: list[tuple[str, str]]
    #: Request headers (names as sent).
    headers: dict[str, str]
    body: bytes
    status: int
    #: Bytes of response body sent.
    sent: int = 0
    #: ``time.time()`` when it arrived.
    time: float = field(default_factory=time.time)

    def param(self, name: str) -> str | None:
        """The first value of a query parameter (name case-insensitive), or None."""
        for key, value in self.query:
            if key.lower() == name.lower():
                return value
        return None


class _Reply(Exception):
    """Raised inside a handler to answer with ``status`` and a JSON error body (or none)."""

    def __init__(self, status: int, code: str | None = None, message: str = "") -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status, self.code, self.message = status, code, message


class StorageServer:
    """The in-memory MRD storage server on ``host`` (``port`` 0: a free one), in a background thread.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`. Thread-safe: Gadgetron's
    connections may store and read at the same time.

    Attributes:
        items: every blob stored, in the order stored (expired ones too).
        requests: every request answered, in the order answered (read once the requests being answered
            are recorded: a client has its answer a moment before the server records it).
        healthy: while False, ``/healthcheck`` answers 503 (Gadgetron then refuses to start).
        log: a stream to write one line per request to, or None.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, log: TextIO | None = None,
                 clock: Callable[[], int] = _now_ms) -> None:
        self.host = host
        self.port = port
        self.log = log
        #: Milliseconds since the epoch (replaceable in tests of expiry).
        self.clock = clock
        self.items: list[Blob] = []
        self._requests: list[Request] = []
        self.healthy = True
        self._lock = threading.Lock()
        self._in_flight = 0
        self._settled = threading.Condition(self._lock)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle ----

    @property
    def url(self) -> str:
        """``http://<host>:<port>``: what ``gadgetron --storage_address`` takes."""
        if self._httpd is None:
            raise RuntimeError("the storage server is not running")
        return f"http://{self.host}:{self._httpd.server_address[1]}"

    def start(self) -> StorageServer:
        if self._httpd is not None:
            return self
        handler = type("Handler", (_Handler,), {"storage": self})
        self._httpd = ThreadingHTTPServer((self.host, self.port), handler)
        self._httpd.daemon_threads = True
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,),  # quick shutdown()
                                        name=f"mrd-storage:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._httpd = self._thread = None

    def __enter__(self) -> StorageServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # ---- helpers for tests ----

    def find(self, **tags: str) -> list[Blob]:
        """The stored blobs (expired ones too) whose tags match ``tags``, newest first."""
        query = {k.lower(): [v] for k, v in tags.items()}
        with self._lock:
            return sorted((b for b in self.items if b.matches(query)), key=lambda b: (b.created_ms, b.seq),
                          reverse=True)

    @property
    def requests(self) -> list[Request]:
        """Every request answered, once those being answered now are recorded (waits up to 5 s)."""
        with self._settled:
            self._settled.wait_for(lambda: self._in_flight == 0, timeout=5.0)
            return list(self._requests)

    def requests_to(self, path_prefix: str, method: str | None = None) -> list[Request]:
        """The recorded requests whose path starts with ``path_prefix`` (and of ``method``, if given)."""
        with self._settled:
            self._settled.wait_for(lambda: self._in_flight == 0, timeout=5.0)
            return [r for r in self._requests
                    if r.path.startswith(path_prefix) and (method is None or r.method == method)]

    def clear(self) -> None:
        with self._lock:
            self.items.clear()
            self._requests.clear()

    # ---- the API ----

    def _begin(self) -> None:
        with self._lock:
            self._in_flight += 1

    def _record(self, request: Request) -> None:
        with self._settled:
            self._requests.append(request)
            self._in_flight -= 1
            self._settled.notify_all()
        if self.log is not None:
            query = urlencode(request.query)
            print(f"{request.method} {request.path}{'?' + query if query else ''} -> {request.status}"
                  f" ({len(request.body)} bytes in, {request.sent} out)", file=self.log, flush=True)

    def blob_info(self, blob: Blob, base: str) -> dict[str, Any]:
        """The JSON metadata of ``blob``, its links under ``base`` (``http://host:port``)."""
        info: dict[str, Any] = {"lastModified": format_rfc3339_ms(blob.created_ms), "subject": blob.subject}
        if blob.expires_ms is not None:
            info["expires"] = format_rfc3339_ms(blob.expires_ms)
        for key, value in (("contentType", blob.content_type), ("device", blob.device), ("name", blob.name),
                           ("session", blob.session)):
            if value is not None:
                info[key] = value
        location = f"{base}/v1/blobs/{quote(blob.combined_id, safe='$&+,:;=@')}"
        info["location"] = location
        info["data"] = location + "/data"
        for key, values in blob.custom_tags.items():
            info[key] = values[0] if len(values) == 1 else list(values)
        return dict(sorted(info.items()))

    def _create(self, query: list[tuple[str, str]], content_type: str | None, body: bytes) -> Blob:
        tags = _group(query)
        subjects = tags.pop("subject", None)
        if subjects is None:
            raise _Reply(400, "InvalidTag", "The subject tag is missing and must be provided. If the no subject "
                                            f"is associated with the blob, specify `{NULL_SUBJECT}`")
        try:
            if subjects[0] == "":
                raise ValueError("the subject tag cannot be empty")
            _validate_system_tag("subject", subjects)
        except ValueError as e:
            raise _Reply(400, "InvalidSubject", str(e)) from None
        system: dict[str, str | None] = {"device": None, "name": None, "session": None}
        ttl_s: float | None = None
        custom: dict[str, list[str]] = {}
        try:
            for name, values in tags.items():
                if name in system:
                    _validate_system_tag(name, values)
                    system[name] = values[0]
                elif name == "_ttl":
                    _validate_values(name, values)
                    seconds = [parse_go_duration(v) for v in values]
                    if any(s < 0 for s in seconds):
                        raise ValueError(f"{name}: time-to-live cannot be negative")
                    ttl_s = seconds[0]
                else:
                    _validate_name(name)
                    _validate_values(name, values)
                    custom[name] = values
        except ValueError as e:
            raise _Reply(400, "InvalidTag", str(e)) from None
        now = self.clock()
        with self._lock:
            blob = Blob(id=uuid.uuid4(), subject=subjects[0], device=system["device"], session=system["session"],
                        name=system["name"], content_type=content_type or None, custom_tags=custom,
                        created_ms=now, expires_ms=None if ttl_s is None else now + int(ttl_s * 1000),
                        data=body, seq=len(self.items))
            self.items.append(blob)
        return blob

    def _search(self, query: list[tuple[str, str]], page_size: int | None = None
                ) -> tuple[list[Blob], dict[str, Any] | None]:
        """The matching unexpired blobs, newest first, one page; and the continuation (None: last page)."""
        tags = _group(query)
        if "subject" not in tags:
            raise _Reply(400, "InvalidQuery",
                         "'subject' query parameter is mandatory. To search for blobs where not associated with a "
                         f"subject, you can specify 'subject={NULL_SUBJECT}'")
        at_ms: int | None = None
        if "_at" in tags:
            ats = tags.pop("_at")
            if len(ats) > 1:
                raise _Reply(400, "InvalidParameter", "The '_at' parameter was specified multiple times in the URL.")
            try:
                at_ms = parse_rfc3339_ms(ats[0])
            except ValueError:
                raise _Reply(400, "InvalidParameter", "The format of the '_at' parameter is invalid") from None
        limits = tags.pop("_limit", None)
        if page_size is None:
            page_size = MAX_PAGE_SIZE
            if limits is not None:
                try:
                    page_size = int(limits[0])
                except ValueError:
                    page_size = 0
                if not 0 < page_size <= MAX_PAGE_SIZE:
                    page_size = MAX_PAGE_SIZE
        after: tuple[int, int] | None = None
        if "_ct" in tags:
            cts = tags.pop("_ct")
            if len(cts) > 1:
                raise _Reply(400, "InvalidContinuationToken",
                             "The'_ct' parameter was specified multiple times in the URL.")
            try:
                token = json.loads(base64.urlsafe_b64decode(cts[0] + "=" * (-len(cts[0]) % 4)))
                after = (int(token["ts"]), int(token["seq"]))
            except (ValueError, KeyError, TypeError, binascii.Error):
                raise _Reply(400, "InvalidContinuationToken", "The'_ct' parameter is invalid.") from None
        now = self.clock()
        with self._lock:
            found = [b for b in self.items
                     if b.matches(tags) and not b.expired(now)
                     and (at_ms is None or b.created_ms <= at_ms)
                     and (after is None or (b.created_ms, b.seq) < after)]
        found.sort(key=lambda b: (b.created_ms, b.seq), reverse=True)
        if len(found) > page_size:
            last = found[page_size - 1]
            return found[:page_size], {"ts": last.created_ms, "seq": last.seq}
        return found, None

    def _get(self, combined_id: str, grace_ms: int) -> Blob:
        if len(combined_id) < 37:
            raise _Reply(404)
        try:
            blob_id = uuid.UUID(combined_id[:36])
        except ValueError:
            raise _Reply(404) from None
        subject = combined_id[37:]
        now = self.clock()
        with self._lock:
            for blob in self.items:
                if blob.id == blob_id and blob.subject == subject and not blob.expired(now, grace_ms):
                    return blob
        raise _Reply(404)


def _group(query: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Query parameters by lower-case name (Go's ``normalizeQueryMapToLowercaseKeys``)."""
    grouped: dict[str, list[str]] = {}
    for key, value in query:
        grouped.setdefault(key.lower(), []).append(value)
    return grouped


def _validate_name(name: str) -> None:
    if name in RESERVED_TAG_NAMES:
        raise ValueError(f"tag name '{name}' is reserved")
    if not TAG_NAME.fullmatch(name):
        raise ValueError(f"tag name '{name}' is invalid: it must be '$null' or start with a letter a-z, followed by "
                         "up to 63 letters (a-z), numbers, hyphens, or underscores")


def _validate_values(name: str, values: list[str]) -> None:
    for value in values:
        if len(value) > MAX_TAG_VALUE_LENGTH:
            raise ValueError(f"the value for tag '{name}' is longer than 128 UTF-8 characters")


def _validate_system_tag(name: str, values: list[str]) -> None:
    _validate_name(name)
    _validate_values(name, values)
    if len(values) != 1:
        raise ValueError(f"only one value for tag '{name}' can be given")


class _Handler(BaseHTTPRequestHandler):
    storage: StorageServer  # set on the subclass StorageServer.start makes
    protocol_version = "HTTP/1.1"
    server_version = "mrd-storage-standin/1"

    # ---- plumbing ----

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # StorageServer.log has one line per request instead

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline(65537)
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)  # the CRLF after each chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _base(self) -> str:
        host = self.headers.get("Host") or f"{self.storage.host}:{self.storage.port}"
        return f"http://{host}"

    def _send(self, status: int, body: bytes = b"", headers: list[tuple[str, str]] | None = None,
              content_type: str | None = None) -> None:
        self.send_response(status)
        for key, value in headers or []:
            self.send_header(key, value)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self._status, self._sent = status, len(body)

    def _send_json(self, status: int, value: Any) -> None:
        body = (json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        self._send(status, body, content_type="application/json; charset=utf-8")

    def _send_data(self, blob: Blob, extra: list[tuple[str, str]]) -> None:
        headers = list(extra)
        if blob.expires_ms is not None:
            headers.append(("Expires", _http_date(blob.expires_ms)))
        headers.append(("Last-Modified", _http_date(blob.created_ms)))
        for name in ("device", "name", "session", "subject"):
            value = getattr(blob, name)
            if value is not None:
                headers.append((f"Mrd-Tag-{name.capitalize()}", value))
        for name, values in blob.custom_tags.items():
            headers.extend((_canonical_header(f"Mrd-Tag-{name}"), v) for v in values)
        self._send(200, blob.data, headers, content_type=blob.content_type or "application/octet-stream")

    def _handle(self, method: str) -> None:
        self.storage._begin()
        self._status, self._sent = 0, 0
        parts = urlsplit(self.path)
        path = parts.path
        query = parse_qsl(parts.query, keep_blank_values=True)
        body = b""
        try:
            try:
                body = self._read_body()
                self._route(method, path, query, body)
            except _Reply as reply:
                if reply.code is None:
                    self._send(reply.status)
                else:
                    self._send_json(reply.status, {"error": {"code": reply.code, "message": reply.message}})
            except Exception as e:  # a bug here: answer 500 (as Go's Recoverer) rather than drop the connection
                self._send_json(500, {"error": {"code": "InternalError", "message": f"{type(e).__name__}: {e}"}})
        finally:  # recorded even when the client has gone (its in-flight count must come back down)
            self.storage._record(Request(method=method, path=path, query=query,
                                         headers=dict(self.headers.items()), body=body, status=self._status,
                                         sent=self._sent))

    def _route(self, method: str, path: str, query: list[tuple[str, str]], body: bytes) -> None:
        storage = self.storage
        if path == "/healthcheck":
            if storage.healthy:
                self._send_json(200, {"status": "OK"})
            else:
                self._send_json(503, {"status": "Service Unavailable",
                                      "errors": {"database": "failed to connect to database"}})
            return
        if path in ("/v1/blobs", "/v1/blobs/"):
            self._only(method, "GET")
            page, continuation = storage._search(query)
            base = self._base()
            response: dict[str, Any] = {"items": [storage.blob_info(b, base) for b in page]}
            if continuation is not None:
                token = base64.urlsafe_b64encode(json.dumps(continuation).encode()).rstrip(b"=").decode()
                next_query = [(k, v) for k, v in query if k != "_ct"] + [("_ct", token)]
                next_query.sort(key=lambda kv: kv[0])  # Go's url.Values.Encode sorts by name
                response["nextLink"] = f"{base}{path}?{urlencode(next_query)}"
            self._send_json(200, response)
            return
        if path == "/v1/blobs/data":
            if method == "GET":
                raise _Reply(404)  # chi falls through to /v1/blobs/{combined-id}, and "data" is no id
            self._only(method, "POST")
            blob = storage._create(query, self.headers.get("Content-Type"), body)
            self._send_json(201, storage.blob_info(blob, self._base()))
            return
        if path == "/v1/blobs/data/latest":
            self._only(method, "GET")
            page, _ = storage._search([(k, v) for k, v in query if k.lower() not in ("_limit", "_ct")], page_size=1)
            if not page:
                raise _Reply(404, "EmptyResults", "The search returned no results.")
            location = storage.blob_info(page[0], self._base())["location"]
            self._send_data(page[0], [("Location", location)])
            return
        m = re.fullmatch(r"/v1/blobs/([^/]+)(/data)?", path)
        if m:
            self._only(method, "GET")
            combined_id = unquote(m.group(1))
            if m.group(2):
                self._send_data(storage._get(combined_id, DATA_GRACE_MS), [])
            else:
                self._send_json(200, storage.blob_info(storage._get(combined_id, 0), self._base()))
            return
        raise _Reply(404)

    @staticmethod
    def _only(method: str, allowed: str) -> None:
        if method != allowed:
            raise _Reply(405)

    def do_GET(self) -> None:  # noqa: N802 - http.server's names
        self._handle("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._handle("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._handle("DELETE")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="In-memory stand-in for the MRD storage server (for tests).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3333)
    args = parser.parse_args(argv)
    server = StorageServer(args.host, args.port, log=sys.stdout).start()
    print(f"serving {server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
