"""A range-capable HTTP server on 127.0.0.1 for the remote-input tests, recording every request.

``RangeServer(root)`` serves the files under ``root`` (nothing else: no directory listings, 404 for
a folder or a missing file) from a thread per connection, HTTP/1.1 with keep-alive, as a static
object store does:

* ``HEAD``: 200 with ``Content-Length`` and ``Accept-Ranges: bytes``;
* ``GET`` without ``Range``: 200 and the whole file;
* ``GET`` with ``Range: bytes=a-b`` (also ``a-`` and ``-n``): 206 with ``Content-Range``;
* several ranges (``bytes=a-b,c-d``): 206 ``multipart/byteranges`` with one part per range;
* ranges that are all unsatisfiable (start at or past the end): 416 with ``Content-Range: bytes */size``;
  a malformed ``Range`` header is ignored (200, whole file), as RFC 9110 says.

Every request is recorded in :attr:`RangeServer.requests` (method, path, the ``Range`` header,
status, body bytes sent), so a test can show that reads were ranged rather than whole-file downloads.
"""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tests.helpers.loopback import LoopbackServer, QuietHandler

_RANGE = re.compile(r"^\s*(\d*)\s*-\s*(\d*)\s*$")
BOUNDARY = "bicorseg-test-boundary"


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    range: str | None
    status: int
    sent: int  # body bytes


def parse_ranges(header: str, size: int) -> list[tuple[int, int]] | None:
    """Inclusive byte ranges of a ``Range`` header clipped to ``size``; None when malformed.

    Unsatisfiable ranges (start at or past the end, or a zero suffix) are left out, so an empty
    list means 416.
    """
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        return None
    ranges = []
    for part in spec.split(","):
        match = _RANGE.match(part)
        if match is None or (not match.group(1) and not match.group(2)):
            return None
        first, last = match.group(1), match.group(2)
        if not first:  # suffix: the last n bytes
            length = int(last)
            if length == 0:
                continue
            ranges.append((max(0, size - length), size - 1))
            continue
        start = int(first)
        end = int(last) if last else size - 1
        if last and end < start:
            return None
        if start >= size:
            continue
        ranges.append((start, min(end, size - 1)))
    return ranges


class RangeServer(LoopbackServer):
    """Serve ``root`` on 127.0.0.1 (a free port) until :meth:`close`; see the module docstring."""

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).resolve()
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        server = self

        class Handler(QuietHandler):
            protocol_version = "HTTP/1.1"

            def _record(self, status: int, sent: int) -> None:
                with server._lock:
                    server.requests.append(
                        Request(
                            self.command, urlsplit(self.path).path, self.headers.get("Range"), status, sent
                        )
                    )

            def _plain(self, status: int, headers: dict[str, str] | None = None) -> None:
                self._record(status, 0)  # before answering: a client may look at the log once answered
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def answer(self, body: bool) -> None:
                relative = unquote(urlsplit(self.path).path).lstrip("/")
                target = (server.root / relative).resolve()
                if server.root not in target.parents or not target.is_file():
                    self._plain(404)
                    return
                data = target.read_bytes()
                size = len(data)
                header = self.headers.get("Range")
                ranges = parse_ranges(header, size) if header is not None and body else None
                if ranges is None:  # no (or a malformed) Range header, or HEAD: the whole file
                    self._record(200, size if body else 0)
                    self.send_response(200)
                    self.send_header("Content-Length", str(size))
                    self.send_header("Accept-Ranges", "bytes")
                    self.send_header("Content-Type", "application/octet-stream")
                    self.end_headers()
                    if body:
                        self.wfile.write(data)
                    return
                if not ranges:
                    self._plain(416, {"Content-Range": f"bytes */{size}"})
                    return
                if len(ranges) == 1:
                    start, end = ranges[0]
                    chunk = data[start : end + 1]
                    self._record(206, len(chunk))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
                    self.send_header("Content-Length", str(len(chunk)))
                    self.send_header("Accept-Ranges", "bytes")
                    self.send_header("Content-Type", "application/octet-stream")
                    self.end_headers()
                    self.wfile.write(chunk)
                    return
                parts = []
                for start, end in ranges:
                    parts.append(
                        (
                            f"--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\n"
                            f"Content-Range: bytes {start}-{end}/{size}\r\n\r\n"
                        ).encode()
                        + data[start : end + 1]
                        + b"\r\n"
                    )
                payload = b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
                self._record(206, sum(end - start + 1 for start, end in ranges))
                self.send_response(206)
                self.send_header("Content-Type", f"multipart/byteranges; boundary={BOUNDARY}")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                self.wfile.write(payload)

        super().__init__(Handler)

    def requests_for(self, relative: str) -> list[Request]:
        path = "/" + relative.lstrip("/")
        with self._lock:
            return [r for r in self.requests if r.path == path]
