"""The broker's local object store over real HTTP: the conditional writes Tansu relies on,
listing as Tansu's S3 client reads it, and objects surviving a restart of the store."""

from __future__ import annotations

import http.client
import threading
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest

from twinstream.broker_storage import StorageError, parse_storage
from twinstream.objectstore import make_server

NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"


class Client:
    def __init__(self, port: int) -> None:
        self.port = port

    def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
                ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[Client, Path]]:
    root = tmp_path / "store"
    (root / "tansu").mkdir(parents=True)
    server = make_server(root, port=0, fsync=False)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield Client(server.server_address[1]), root
    finally:
        server.shutdown()
        server.server_close()


def test_create_only_and_compare_and_swap(store: tuple[Client, Path]) -> None:
    client, _ = store
    status, headers, _ = client.request("PUT", "/tansu/meta.json", b"v1", {"If-None-Match": "*"})
    assert status == 200
    first = headers["ETag"]
    assert client.request("PUT", "/tansu/meta.json", b"v1-again", {"If-None-Match": "*"})[0] == 412
    status, headers, _ = client.request("PUT", "/tansu/meta.json", b"v2", {"If-Match": first})
    assert status == 200
    second = headers["ETag"]
    assert second != first
    assert client.request("PUT", "/tansu/meta.json", b"stale", {"If-Match": first})[0] == 412
    status, headers, body = client.request("GET", "/tansu/meta.json")
    assert (status, body, headers["ETag"]) == (200, b"v2", second)
    assert client.request("GET", "/tansu/meta.json", headers={"If-None-Match": second})[0] == 304
    assert client.request("PUT", "/tansu/absent.json", b"x", {"If-Match": second})[0] == 412


def test_quick_writes_of_equal_size_get_new_tags(store: tuple[Client, Path]) -> None:
    """A watermark rewritten many times a second, its size unchanged: every write must
    change the ETag, or a reader holding the old one is told (304) that nothing changed."""
    client, _ = store
    etag = client.request("PUT", "/tansu/w.json", b'{"high":1000}')[1]["ETag"]
    for high in range(1001, 1201):
        status, headers, _ = client.request("PUT", "/tansu/w.json", b'{"high":%d}' % high, {"If-Match": etag})
        assert status == 200 and headers["ETag"] != etag
        status, _, body = client.request("GET", "/tansu/w.json", headers={"If-None-Match": etag})
        assert (status, body) == (200, b'{"high":%d}' % high)
        etag = headers["ETag"]


def test_concurrent_compare_and_swap_has_one_winner(store: tuple[Client, Path]) -> None:
    client, _ = store
    etag = client.request("PUT", "/tansu/watermark.json", b"0")[1]["ETag"]
    results: list[int] = []

    def writer(n: int) -> None:
        results.append(client.request("PUT", "/tansu/watermark.json", str(n + 1).encode(), {"If-Match": etag})[0])

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [200] + [412] * 7


def test_list_get_range_delete_and_restart(store: tuple[Client, Path], tmp_path: Path) -> None:
    client, root = store
    for key in ("clusters/c/topics/t/partitions/0000000000/records/00000000000000000000.batch",
                "clusters/c/topics/t/partitions/0000000000/records/00000000000000000005.batch",
                "clusters/c/topics/t/partitions/0000000001/watermark.json",
                "clusters/c/meta.json"):
        assert client.request("PUT", f"/tansu/{key}", key.encode())[0] == 200
    status, _, body = client.request("GET", "/tansu?list-type=2&prefix=clusters/c/topics/t/partitions/0000000000/records/")
    keys = [e.text for e in ElementTree.fromstring(body).iter(f"{NS}Key")]
    assert status == 200 and keys == [
        "clusters/c/topics/t/partitions/0000000000/records/00000000000000000000.batch",
        "clusters/c/topics/t/partitions/0000000000/records/00000000000000000005.batch",
    ]
    _, _, body = client.request("GET", "/tansu?list-type=2&prefix=clusters/c/&delimiter=/")
    tree = ElementTree.fromstring(body)
    assert [e.text for e in tree.iter(f"{NS}Key")] == ["clusters/c/meta.json"]
    assert [e.text for e in tree.iter(f"{NS}Prefix") if e.text != "clusters/c/"] == ["clusters/c/topics/"]
    _, _, body = client.request("GET", "/tansu?list-type=2&prefix=clusters/&max-keys=2")
    page = ElementTree.fromstring(body)
    token = page.find(f"{NS}NextContinuationToken").text
    _, _, body = client.request("GET", f"/tansu?list-type=2&prefix=clusters/&continuation-token={token}")
    rest = [e.text for e in ElementTree.fromstring(body).iter(f"{NS}Key")]
    assert len([e.text for e in page.iter(f"{NS}Key")]) + len(rest) == 4
    status, _, body = client.request("GET", "/tansu/clusters/c/meta.json", headers={"Range": "bytes=8-"})
    assert (status, body) == (206, b"/c/meta.json")
    assert client.request("DELETE", "/tansu/clusters/c/meta.json")[0] == 204
    assert client.request("GET", "/tansu/clusters/c/meta.json")[0] == 404
    assert client.request("GET", "/nobucket/x")[0] == 404
    # A new server on the same directory serves what the first one stored.
    second = make_server(root, port=0, fsync=False)
    thread = threading.Thread(target=second.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        key = "/tansu/clusters/c/topics/t/partitions/0000000001/watermark.json"
        assert Client(second.server_address[1]).request("GET", key)[2] == key.removeprefix("/tansu/").encode()
    finally:
        second.shutdown()
        second.server_close()


def test_storage_specs() -> None:
    assert parse_storage(None).kind == "memory"
    assert parse_storage("memory://tansu/").engine_url == "memory://tansu/"
    local = parse_storage("./broker-data")
    assert local.durable and local.directory is not None and local.directory.is_absolute()
    assert parse_storage("s3://bucket").engine_url == "s3://bucket/"
    with pytest.raises(StorageError, match="postgres"):
        parse_storage("postgres://postgres@localhost/tansu")
