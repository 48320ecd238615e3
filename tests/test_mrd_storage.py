"""The in-memory MRD storage server stand-in (tests/mrd_storage.py), over plain HTTP.

The requests are the ones Gadgetron 4.7.2's ``StorageClient`` (core/Storage.cpp) makes: a health check, a
chunked ``POST /v1/blobs/data`` with the tags in the query (``_ttl=172800s`` for the 48 hours Gadgetron
uses), ``GET /v1/blobs/data/latest``, ``GET /v1/blobs`` with ``_limit`` and its ``nextLink``, and the
``location`` / ``data`` links.
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.error
import urllib.request
from datetime import datetime, timezone
from typing import Any, Iterator
from urllib.parse import urlsplit

import pytest

from mrd_storage import StorageServer, format_rfc3339_ms, parse_go_duration

#: What Gadgetron's NoiseAdjust stores: MeasurementSpace tags + name + the 48 h time-to-live.
NOISE_TAGS = "subject=P1&device=DEV1&session=ST1&name=noise_covariance&measurement=M1"
RFC3339_MS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,3})?Z")
T0_MS = 1_700_000_000_000  # 2023-11-14T22:13:20Z


def call(method: str, url: str, data: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, http.client.HTTPMessage, bytes]:
    """``(status, headers, body)``; HTTP errors are returned, not raised."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        with e:
            return e.code, e.headers, e.read()


def call_json(method: str, url: str, data: bytes | None = None) -> tuple[int, Any]:
    status, _, body = call(method, url, data)
    return status, json.loads(body) if body else None


def store_chunked(base: str, query: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """POST as Gadgetron does: ``Transfer-Encoding: chunked``, no ``Expect``."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        chunks = [body[i:i + 7] for i in range(0, len(body), 7)]
        conn.request("POST", f"/v1/blobs/data?{query}", body=iter(chunks), encode_chunked=True,
                     headers={"Content-Type": "application/octet-stream"})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


class Clock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def clock() -> Clock:
    return Clock(T0_MS)


@pytest.fixture
def server(clock: Clock) -> Iterator[StorageServer]:
    with StorageServer(clock=clock) as s:
        yield s


def test_url_is_loopback_with_a_free_port_and_stops() -> None:
    with StorageServer() as s:
        url = s.url
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        assert s.port == int(url.rsplit(":", 1)[1]) > 0
        assert call("GET", url + "/healthcheck")[0] == 200
    with pytest.raises(RuntimeError):
        s.url
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "/healthcheck", timeout=2)


def test_health_check(server: StorageServer) -> None:
    assert call_json("GET", server.url + "/healthcheck") == (200, {"status": "OK"})
    server.healthy = False
    status, body = call_json("GET", server.url + "/healthcheck")
    assert status == 503
    assert body["status"] == "Service Unavailable"
    assert body["errors"]


def test_store_returns_the_metadata_gadgetron_parses(server: StorageServer) -> None:
    payload = bytes(range(256)) * 3
    status, info = store_chunked(server.url, NOISE_TAGS + "&_ttl=172800s", payload)
    assert status == 201
    [blob] = server.items
    assert blob.data == payload
    assert (blob.subject, blob.device, blob.session, blob.name) == ("P1", "DEV1", "ST1", "noise_covariance")
    assert blob.custom_tags == {"measurement": ["M1"]}
    assert blob.content_type == "application/octet-stream"
    assert blob.expires_ms == T0_MS + 172800 * 1000
    location = f"{server.url}/v1/blobs/{blob.id}-P1"
    assert info == {
        "subject": "P1", "device": "DEV1", "session": "ST1", "name": "noise_covariance", "measurement": "M1",
        "contentType": "application/octet-stream",
        "lastModified": "2023-11-14T22:13:20Z", "expires": "2023-11-16T22:13:20Z",
        "location": location, "data": location + "/data",
    }
    assert list(info) == sorted(info)


def test_times_are_rfc3339_utc_with_milliseconds() -> None:
    assert format_rfc3339_ms(T0_MS + 120) == "2023-11-14T22:13:20.12Z"
    assert format_rfc3339_ms(T0_MS + 5) == "2023-11-14T22:13:20.005Z"
    assert RFC3339_MS.fullmatch(format_rfc3339_ms(T0_MS + 999))
    with StorageServer() as s:  # the real clock
        _, info = call_json("POST", s.url + "/v1/blobs/data?subject=P1&_ttl=1h", b"x")
    assert RFC3339_MS.fullmatch(info["lastModified"]) and RFC3339_MS.fullmatch(info["expires"])
    created = datetime.strptime(info["lastModified"][:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc)
    assert abs(created.timestamp() - datetime.now(timezone.utc).timestamp()) < 60


def test_get_latest_returns_the_newest_match_with_its_tags_as_headers(server: StorageServer, clock: Clock) -> None:
    call("POST", f"{server.url}/v1/blobs/data?{NOISE_TAGS}&_ttl=172800s", b"first")
    clock.ms += 1000
    _, second = call_json("POST", f"{server.url}/v1/blobs/data?{NOISE_TAGS}&_ttl=172800s", b"second")
    call("POST", f"{server.url}/v1/blobs/data?{NOISE_TAGS.replace('M1', 'M2')}", b"other measurement")

    status, headers, body = call("GET", f"{server.url}/v1/blobs/data/latest?{NOISE_TAGS}")
    assert (status, body) == (200, b"second")
    assert headers["Location"] == second["location"]
    assert headers["Mrd-Tag-Subject"] == "P1"
    assert headers["Mrd-Tag-Device"] == "DEV1"
    assert headers["Mrd-Tag-Session"] == "ST1"
    assert headers["Mrd-Tag-Name"] == "noise_covariance"
    assert headers["Mrd-Tag-Measurement"] == "M1"
    assert headers["Last-Modified"] == "Tue, 14 Nov 2023 22:13:21 GMT"
    assert headers["Expires"] == "Thu, 16 Nov 2023 22:13:21 GMT"
    assert headers["Content-Type"] == "application/x-www-form-urlencoded"  # urllib's, like curl's POST
    assert headers["Content-Length"] == "6"

    assert call("GET", f"{server.url}/v1/blobs/data/latest?{NOISE_TAGS.replace('M1', 'M2')}")[2] \
        == b"other measurement"
    # two in the same millisecond: the one stored last
    call("POST", f"{server.url}/v1/blobs/data?subject=P1&name=x", b"a")
    call("POST", f"{server.url}/v1/blobs/data?subject=P1&name=x", b"b")
    assert call("GET", f"{server.url}/v1/blobs/data/latest?subject=P1&name=x")[2] == b"b"


def test_get_latest_404_when_nothing_matches(server: StorageServer) -> None:
    call("POST", f"{server.url}/v1/blobs/data?{NOISE_TAGS}", b"cov")
    for query in ("subject=P2&name=noise_covariance",              # other subject
                  f"{NOISE_TAGS.replace('M1', 'M9')}",               # other measurement (a custom tag)
                  "subject=P1&name=noise_covariance&device=DEV2",    # other device
                  "subject=P1&name=noise_covariance&measurement=m1",  # values are case-sensitive
                  "subject=P1&name=noise_covariance&protocol=x"):    # a custom tag the blob lacks
        status, body = call_json("GET", f"{server.url}/v1/blobs/data/latest?{query}")
        assert status == 404, query
        assert body["error"]["code"] == "EmptyResults"
    # tags the query leaves out do not matter; tag names are case-insensitive
    for query in ("subject=P1", "subject=P1&name=noise_covariance", "Subject=P1&MEASUREMENT=M1&Device=DEV1"):
        assert call("GET", f"{server.url}/v1/blobs/data/latest?{query}")[:3:2] == (200, b"cov"), query


def test_a_blob_without_device_is_not_found_by_a_query_naming_one(server: StorageServer) -> None:
    call("POST", f"{server.url}/v1/blobs/data?subject=P1&name=noise_covariance&measurement=M1", b"cov")
    assert call("GET", f"{server.url}/v1/blobs/data/latest?{NOISE_TAGS}")[0] == 404
    assert call("GET", f"{server.url}/v1/blobs/data/latest?subject=P1&measurement=M1")[0] == 200


def test_list_items_newest_first_with_next_link(server: StorageServer, clock: Clock) -> None:
    for i in range(5):
        call("POST", f"{server.url}/v1/blobs/data?subject=P1&name=n{i}&series=s&series=t", f"{i}".encode())
        clock.ms += 10
    call("POST", f"{server.url}/v1/blobs/data?subject=P2&name=n9", b"9")

    status, page = call_json("GET", f"{server.url}/v1/blobs?subject=P1&_limit=2")
    assert status == 200
    assert [item["name"] for item in page["items"]] == ["n4", "n3"]
    assert page["items"][0]["series"] == ["s", "t"]
    assert page["nextLink"].startswith(f"{server.url}/v1/blobs?")
    assert "_limit=2" in page["nextLink"] and "subject=P1" in page["nextLink"]
    names = [item["name"] for item in page["items"]]
    while "nextLink" in page:
        status, page = call_json("GET", page["nextLink"])
        assert status == 200
        names += [item["name"] for item in page["items"]]
    assert names == ["n4", "n3", "n2", "n1", "n0"]

    _, everything = call_json("GET", f"{server.url}/v1/blobs?subject=P1&_limit=20")  # Gadgetron's default
    assert len(everything["items"]) == 5 and "nextLink" not in everything
    _, one = call_json("GET", f"{server.url}/v1/blobs?subject=P1&name=n2")
    assert [(i["name"], i["subject"]) for i in one["items"]] == [("n2", "P1")]
    assert call_json("GET", f"{server.url}/v1/blobs?subject=P3") == (200, {"items": []})


def test_location_and_data_links(server: StorageServer, clock: Clock) -> None:
    _, info = call_json("POST", f"{server.url}/v1/blobs/data?{NOISE_TAGS}&_ttl=60s", b"payload")
    assert call_json("GET", info["location"]) == (200, info)
    status, headers, body = call("GET", info["data"])
    assert (status, body) == (200, b"payload")
    assert headers["Mrd-Tag-Measurement"] == "M1" and "Location" not in headers
    blob_id = info["location"].rsplit("/", 1)[1][:36]
    for path in (f"/v1/blobs/{blob_id}-P2", f"/v1/blobs/{blob_id}-P2/data",       # other subject
                 "/v1/blobs/00000000-0000-0000-0000-000000000000-P1", "/v1/blobs/nonsense", "/v1/nothing"):
        status, _, body = call("GET", server.url + path)
        assert (status, body) == (404, b""), path

    clock.ms += 61_000  # expired: gone from searches and the metadata link; the data link has 30 min of grace
    assert call("GET", f"{server.url}/v1/blobs/data/latest?{NOISE_TAGS}")[0] == 404
    assert call_json("GET", f"{server.url}/v1/blobs?subject=P1") == (200, {"items": []})
    assert call("GET", info["location"])[0] == 404
    assert call("GET", info["data"])[:3:2] == (200, b"payload")
    clock.ms += 30 * 60_000
    assert call("GET", info["data"])[0] == 404
    assert len(server.items) == 1  # kept for assertions


def test_subject_null_for_scanner_space(server: StorageServer) -> None:
    status, info = call_json("POST", f"{server.url}/v1/blobs/data?subject=%24null&device=DEV1&name=x", b"s")
    assert status == 201 and info["subject"] == "$null"
    assert info["location"].endswith("-$null")
    assert call("GET", info["data"])[2] == b"s"
    assert call("GET", f"{server.url}/v1/blobs/data/latest?subject=%24null&device=DEV1&name=x")[2] == b"s"


@pytest.mark.parametrize("query, code", [
    ("name=x", "InvalidTag"),                      # no subject
    ("subject=", "InvalidSubject"),
    ("subject=a&subject=b", "InvalidSubject"),
    ("subject=P1&name=a&name=b", "InvalidTag"),    # system tags take one value
    ("subject=P1&location=x", "InvalidTag"),       # reserved
    ("subject=P1&contentType=x", "InvalidTag"),    # reserved (names are lower-cased)
    ("subject=P1&9lives=x", "InvalidTag"),         # not a tag name
    ("subject=P1&_limit=3", "InvalidTag"),
    ("subject=P1&_ttl=48", "InvalidTag"),          # a Go duration needs a unit
    ("subject=P1&_ttl=-1s", "InvalidTag"),
    ("subject=P1&tag=" + "v" * 129, "InvalidTag"),
])
def test_store_rejects_bad_tags(server: StorageServer, query: str, code: str) -> None:
    status, body = call_json("POST", f"{server.url}/v1/blobs/data?{query}", b"x")
    assert status == 400
    assert body["error"]["code"] == code and body["error"]["message"]
    assert server.items == []


@pytest.mark.parametrize("path, status, code", [
    ("/v1/blobs?name=x", 400, "InvalidQuery"),
    ("/v1/blobs/data/latest?name=x", 400, "InvalidQuery"),
    ("/v1/blobs?subject=P1&_ct=garbage", 400, "InvalidContinuationToken"),
    ("/v1/blobs?subject=P1&_at=yesterday", 400, "InvalidParameter"),
])
def test_search_rejects_bad_queries(server: StorageServer, path: str, status: int, code: str) -> None:
    assert call_json("GET", server.url + path)[0] == status
    assert call_json("GET", server.url + path)[1]["error"]["code"] == code


def test_search_at_a_time(server: StorageServer, clock: Clock) -> None:
    call("POST", f"{server.url}/v1/blobs/data?subject=P1&name=c", b"old")
    clock.ms += 5000
    call("POST", f"{server.url}/v1/blobs/data?subject=P1&name=c", b"new")
    at = "2023-11-14T22:13:22Z"  # between the two
    assert call("GET", f"{server.url}/v1/blobs/data/latest?subject=P1&name=c&_at={at}")[2] == b"old"
    assert call("GET", f"{server.url}/v1/blobs/data/latest?subject=P1&name=c")[2] == b"new"


def test_wrong_method_is_405(server: StorageServer) -> None:
    assert call("GET", server.url + "/v1/blobs/data")[0] == 404  # "data" is no blob id
    assert call("POST", server.url + "/v1/blobs/data/latest?subject=P1", b"x")[0] == 405
    assert call("DELETE", server.url + "/v1/blobs?subject=P1")[0] == 405


def test_requests_are_recorded(server: StorageServer) -> None:
    store_chunked(server.url, NOISE_TAGS + "&_ttl=172800s", b"abc")
    call("GET", f"{server.url}/v1/blobs/data/latest?subject=P9")
    post, get = server.requests
    assert (post.method, post.path, post.status, post.body) == ("POST", "/v1/blobs/data", 201, b"abc")
    assert post.query[0] == ("subject", "P1") and post.param("_TTL") == "172800s"
    assert post.headers["Transfer-Encoding"] == "chunked"
    assert post.sent > 0
    assert (get.method, get.path, get.status, get.param("subject")) == ("GET", "/v1/blobs/data/latest", 404, "P9")
    assert server.requests_to("/v1/blobs/data", "POST") == [post]
    assert [b.name for b in server.find(subject="P1", measurement="M1")] == ["noise_covariance"]
    server.clear()
    assert server.requests == [] and server.items == []


@pytest.mark.parametrize("text, seconds", [
    ("172800s", 172800.0), ("48h", 172800.0), ("1h30m", 5400.0), ("1.5h", 5400.0), ("300ms", 0.3),
    ("0", 0.0), ("-2m", -120.0), ("2h45m10.5s", 9910.5), ("10us", 1e-5),
])
def test_parse_go_duration(text: str, seconds: float) -> None:
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "48", "1d", "h", "s1", "1.5", "--1s", ".s"])
def test_parse_go_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_go_duration(text)
