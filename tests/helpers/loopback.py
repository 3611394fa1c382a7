"""The one way the tests serve HTTP: a server on 127.0.0.1 (a free port), stopped when done.

:class:`LoopbackServer` answers with a request handler class from a thread per connection until
:meth:`~LoopbackServer.close` (or the end of a ``with`` block); :mod:`.range_server` (files with
byte ranges) and :mod:`.hub` (the Hugging Face Hub's endpoints) build on it.
"""

from __future__ import annotations

import http.server
import threading


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A handler that logs nothing and answers HEAD and GET with one method, :meth:`answer`."""

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self.answer(body=False)

    def do_GET(self) -> None:
        self.answer(body=True)

    def answer(self, body: bool) -> None:
        raise NotImplementedError


class LoopbackServer:
    """``handler`` served on 127.0.0.1 at :attr:`port` until :meth:`close`."""

    def __init__(self, handler: type[http.server.BaseHTTPRequestHandler]) -> None:
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, relative: str = "") -> str:
        """The address of ``relative`` on this server (of the server itself when empty)."""
        base = f"http://127.0.0.1:{self.port}"
        return f"{base}/{relative.lstrip('/')}" if relative else base

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def __enter__(self):  # the subclass's type
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
