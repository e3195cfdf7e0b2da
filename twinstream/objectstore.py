"""A small S3-compatible object store on a local directory: the embedded broker's disk.

Why it exists: the bundled Tansu build stores topics, offsets and group state either in
memory or in an S3 bucket (its PostgreSQL and SQLite engines are not compiled in), and
it relies on S3 *conditional writes* (``If-Match`` / ``If-None-Match: *``) to update its
metadata objects safely. Local S3 servers that ship as packages either keep objects in
memory or accept conditional writes without checking them (measured: ``rclone serve s3``
answers 200 to a ``PUT`` with a stale ``If-Match``), which would let two concurrent
metadata updates overwrite each other. This store is the few operations Tansu uses, with
the conditions checked and the write made visible atomically under one lock, and every
object fsynced before it is acknowledged.

Operations: GET/HEAD (``If-None-Match`` -> 304, ``Range``), PUT (``If-Match``,
``If-None-Match: *`` -> 412), DELETE, bulk delete (``POST ?delete``), ListObjectsV2
(``prefix``, ``delimiter``, ``max-keys``, ``continuation-token``/``start-after``).
Requests are not authenticated: it listens on loopback only, for one broker.

Run: ``python -m twinstream.objectstore --root DIR --port PORT`` (buckets are the
directories under ``DIR``; ``twinstream broker --storage DIR`` starts it).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import threading
import urllib.parse
from email.utils import formatdate
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from xml.sax.saxutils import escape, unescape

TMP_DIR = ".objectstore-tmp"  # under the root, not a bucket: same filesystem, so rename is atomic
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
_DELETE_KEY = re.compile(rb"<Key>(.*?)</Key>", re.DOTALL)


ETAG_XATTR = "user.twinstream.etag"  # the object's ETag, kept on its file (set before the rename)


def content_etag(data: bytes) -> str:
    """S3's ETag of a single-part object: the MD5 of its bytes, quoted.

    Why not the file's inode and mtime: ext4 reuses a freed inode at once and its
    timestamps tick every few milliseconds, so two quick writes of the same size got the
    same tag, and a stale cached watermark looked current (``If-None-Match`` -> 304).

    >>> content_etag(b"")
    '"d41d8cd98f00b204e9800998ecf8427e"'
    """
    return f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'


def stored_etag(target: int | Path) -> str | None:
    """The ETag kept on a file (path or open descriptor); None if the file system keeps none.

    Raises FileNotFoundError for a missing path.
    """
    try:
        return os.getxattr(target, ETAG_XATTR).decode()
    except FileNotFoundError:
        raise
    except OSError:  # no such attribute, or no user attributes on this file system
        return None


def _same_etag(header: str, etag: str) -> bool:
    return any(tag.strip().strip('"') == etag.strip('"') for tag in header.split(","))


class Store:
    """Objects as files under ``root/bucket/key``; conditional writes are atomic."""

    def __init__(self, root: Path, fsync: bool = True) -> None:
        self.root = root.resolve()
        self.fsync = fsync
        self.lock = threading.Lock()
        (self.root / TMP_DIR).mkdir(parents=True, exist_ok=True)
        self._tmp_seq = 0

    def path(self, bucket: str, key: str = "") -> Path:
        path = (self.root / bucket / key).resolve()
        if self.root not in path.parents and path != self.root / bucket:
            raise PermissionError(f"{bucket}/{key} escapes the store")
        if bucket == TMP_DIR:
            raise PermissionError("reserved name")
        return path

    def bucket_exists(self, bucket: str) -> bool:
        return self.path(bucket).is_dir()

    def put(self, bucket: str, key: str, body: bytes, if_match: str | None, if_none_match: str | None) -> str | None:
        """Write an object; the new ETag, or None when a condition fails (412)."""
        target = self.path(bucket, key)
        with self.lock:
            self._tmp_seq += 1
            tmp = self.root / TMP_DIR / f"{os.getpid()}-{threading.get_ident()}-{self._tmp_seq}"
        etag = content_etag(body)
        with tmp.open("wb") as handle:
            handle.write(body)
            try:
                os.setxattr(handle.fileno(), ETAG_XATTR, etag.encode())
            except OSError:  # no user attributes here: readers hash the content instead
                pass
            if self.fsync:
                handle.flush()
                os.fsync(handle.fileno())
        target.parent.mkdir(parents=True, exist_ok=True)
        with self.lock:
            try:
                current = stored_etag(target) or content_etag(target.read_bytes())
            except FileNotFoundError:
                current = None
            if (if_none_match is not None and if_none_match.strip() == "*" and current is not None) or (
                if_match is not None and (current is None or not _same_etag(if_match, current))
            ):
                tmp.unlink(missing_ok=True)
                return None
            os.replace(tmp, target)
        if self.fsync:
            fd = os.open(target.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return etag

    def delete(self, bucket: str, key: str) -> None:
        with self.lock:
            self.path(bucket, key).unlink(missing_ok=True)

    def list(self, bucket: str, prefix: str, delimiter: str, after: str, limit: int
             ) -> tuple[list[tuple[str, os.stat_result]], list[str], str | None]:
        """(objects, common prefixes, next key to continue after or None), keys in order."""
        base = self.path(bucket)
        # Start the walk at the deepest directory the prefix names, not at the bucket.
        start_dir = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        top = base / start_dir if start_dir else base
        keys: list[tuple[str, os.stat_result]] = []
        prefixes: set[str] = set()
        if top.is_dir():
            for dirpath, dirnames, filenames in os.walk(top):
                rel_dir = os.path.relpath(dirpath, base)
                rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
                dirnames[:] = [d for d in dirnames if (rel_dir + d + "/").startswith(prefix[: len(rel_dir + d + "/")])]
                for name in filenames:
                    key = rel_dir + name
                    if not key.startswith(prefix) or key <= after:
                        continue
                    if delimiter:
                        cut = key.find(delimiter, len(prefix))
                        if cut >= 0:
                            prefixes.add(key[: cut + len(delimiter)])
                            continue
                    try:
                        keys.append((key, os.stat(os.path.join(dirpath, name))))
                    except FileNotFoundError:  # deleted while listing
                        pass
        entries = sorted([(k, s) for k, s in keys] + [(p, None) for p in prefixes if p > after], key=lambda e: e[0])
        page, rest = entries[:limit], entries[limit:]
        objects = [(k, s) for k, s in page if s is not None]
        common = [k for k, s in page if s is None]
        return objects, common, (page[-1][0] if rest else None)


def _http_date(stat: os.stat_result) -> str:
    return formatdate(stat.st_mtime, usegmt=True)


def _iso(stat: os.stat_result) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(stat.st_mtime, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: the broker sends many small requests
    store: Store  # set on the subclass by serve()

    def log_message(self, format: str, *args: object) -> None:
        pass

    # --- plumbing --------------------------------------------------------------------
    def _split(self) -> tuple[str, str, dict[str, list[str]]]:
        parsed = urllib.parse.urlsplit(self.path)
        parts = urllib.parse.unquote(parsed.path).lstrip("/").split("/", 1)
        return parts[0], (parts[1] if len(parts) > 1 else ""), urllib.parse.parse_qs(parsed.query, keep_blank_values=True)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head: bool = False) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status != HTTPStatus.NOT_MODIFIED:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and not head:
            self.wfile.write(body)

    def _error(self, status: int, code: str, head: bool = False) -> None:
        body = f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>{code}</Message></Error>'.encode()
        self._send(status, body, {"Content-Type": "application/xml"}, head=head)

    # --- verbs -----------------------------------------------------------------------
    def do_GET(self, head: bool = False) -> None:
        bucket, key, query = self._split()
        if not self.store.bucket_exists(bucket):
            return self._error(404, "NoSuchBucket", head)
        if not key:
            return self._list(bucket, query)
        path = self.store.path(bucket, key)
        try:
            with path.open("rb") as handle:  # data, stat and tag all of the one file opened
                stat = os.fstat(handle.fileno())
                data = handle.read()
                etag = stored_etag(handle.fileno()) or content_etag(data)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return self._error(404, "NoSuchKey", head)
        headers = {"ETag": etag, "Last-Modified": _http_date(stat), "Content-Type": "application/octet-stream",
                   "Accept-Ranges": "bytes"}
        none_match = self.headers.get("If-None-Match")
        if none_match is not None and (none_match.strip() == "*" or _same_etag(none_match, etag)):
            return self._send(304, headers=headers)
        match = self.headers.get("If-Match")
        if match is not None and not _same_etag(match, etag):
            return self._error(412, "PreconditionFailed", head)
        wanted = self.headers.get("Range")
        if wanted and (found := _RANGE.match(wanted.strip())):
            first, last = found.groups()
            size = len(data)
            start = int(first) if first else max(size - int(last), 0)
            end = min(int(last), size - 1) if first and last else size - 1
            if start >= size or start > end:
                return self._error(416, "InvalidRange", head)
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            return self._send(206, data[start : end + 1], headers, head)
        self._send(200, data, headers, head)

    def do_HEAD(self) -> None:
        self.do_GET(head=True)

    def do_PUT(self) -> None:
        bucket, key, _ = self._split()
        body = self._body()
        if not self.store.bucket_exists(bucket):
            return self._error(404, "NoSuchBucket")
        if not key or self.headers.get("x-amz-copy-source"):
            return self._error(501, "NotImplemented")
        etag = self.store.put(bucket, key, body, self.headers.get("If-Match"), self.headers.get("If-None-Match"))
        if etag is None:
            return self._error(412, "PreconditionFailed")
        self._send(200, headers={"ETag": etag})

    def do_DELETE(self) -> None:
        bucket, key, _ = self._split()
        if not self.store.bucket_exists(bucket):
            return self._error(404, "NoSuchBucket")
        self.store.delete(bucket, key)
        self._send(204)

    def do_POST(self) -> None:
        bucket, _, query = self._split()
        body = self._body()
        if "delete" not in query:
            return self._error(501, "NotImplemented")
        deleted = []
        for raw in _DELETE_KEY.findall(body):
            key = unescape(raw.decode(), {"&quot;": '"', "&apos;": "'"})
            self.store.delete(bucket, key)
            deleted.append(f"<Deleted><Key>{escape(key)}</Key></Deleted>")
        xml = '<?xml version="1.0" encoding="UTF-8"?><DeleteResult>' + "".join(deleted) + "</DeleteResult>"
        self._send(200, xml.encode(), {"Content-Type": "application/xml"})

    def _list(self, bucket: str, query: dict[str, list[str]]) -> None:
        def first(name: str, default: str = "") -> str:
            return query.get(name, [default])[0]

        prefix, delimiter = first("prefix"), first("delimiter")
        after = first("continuation-token") or first("start-after")
        limit = max(1, min(int(first("max-keys", "1000") or 1000), 1000))
        objects, prefixes, next_key = self.store.list(bucket, prefix, delimiter, after, limit)
        parts = ['<?xml version="1.0" encoding="UTF-8"?>',
                 '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
                 f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>",
                 f"<KeyCount>{len(objects) + len(prefixes)}</KeyCount><MaxKeys>{limit}</MaxKeys>",
                 f"<IsTruncated>{'true' if next_key else 'false'}</IsTruncated>"]
        if delimiter:
            parts.append(f"<Delimiter>{escape(delimiter)}</Delimiter>")
        if next_key:
            parts.append(f"<NextContinuationToken>{escape(next_key)}</NextContinuationToken>")
        for key, stat in objects:
            try:
                etag = stored_etag(self.store.path(bucket, key))
            except FileNotFoundError:  # deleted since it was listed
                continue
            parts.append(f"<Contents><Key>{escape(key)}</Key><LastModified>{_iso(stat)}</LastModified>"
                         + (f"<ETag>{escape(etag)}</ETag>" if etag else "") + f"<Size>{stat.st_size}</Size>"
                         "<StorageClass>STANDARD</StorageClass></Contents>")
        for common in prefixes:
            parts.append(f"<CommonPrefixes><Prefix>{escape(common)}</Prefix></CommonPrefixes>")
        parts.append("</ListBucketResult>")
        self._send(200, "".join(parts).encode(), {"Content-Type": "application/xml"})


def make_server(root: Path, host: str = "127.0.0.1", port: int = 0, fsync: bool = True) -> ThreadingHTTPServer:
    """The store's HTTP server (not started); ``server.server_address`` has the bound port."""
    store = Store(root, fsync=fsync)
    handler = type("BoundHandler", (Handler,), {"store": store})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", type=Path, required=True, help="Directory holding the buckets.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bucket", action="append", default=[], help="Create this bucket (directory) if missing.")
    parser.add_argument("--no-fsync", action="store_true", help="Skip fsync (faster; loses writes on a machine crash).")
    args = parser.parse_args(argv)
    for bucket in args.bucket:
        (args.root / bucket).mkdir(parents=True, exist_ok=True)
    server = make_server(args.root, args.host, args.port, fsync=not args.no_fsync)
    import signal

    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
