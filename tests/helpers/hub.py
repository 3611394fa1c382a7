"""A Hugging Face cache filled by hand and a loopback server that answers as the Hub's file endpoint does.

``fill_hf_cache(hub_cache, repo_id, files)`` lays files out as huggingface_hub caches them
(``models--ORG--NAME/blobs/<sha256>``, ``snapshots/<commit>/<file>`` linking to the blob,
``refs/main`` holding the commit), so that huggingface_hub finds them in offline mode.

``HubServer(files)`` serves ``/<repo_id>/resolve/<revision>/<file>`` on 127.0.0.1 with the headers
huggingface_hub reads (``X-Repo-Commit``, ``X-Linked-Etag``: the file's sha256, ``X-Linked-Size``);
``etags`` overrides the published sha256 of a file, to play a Hub whose file does not match;
``sizes`` its published size (the body stays the file). It also takes uploads as the Hub's API does
for small files (``create_repo``, the model card's YAML check, ``preupload`` answering "regular",
``commit`` with the files inline): each created repository's request lands in ``created``, each
committed file in ``files``, so what was pushed can be downloaded again.
Point huggingface_hub at it with ``HF_ENDPOINT=server.url()`` (read when huggingface_hub is imported:
give it to a subprocess).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tests.helpers.loopback import LoopbackServer, QuietHandler

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fill_hf_cache(hub_cache: str | os.PathLike, repo_id: str, files: dict[str, bytes]) -> Path:
    """Put ``files`` (name -> content) in the cache ``hub_cache`` (``$HF_HOME/hub``) as ``repo_id``'s; the snapshot."""
    repo = Path(hub_cache) / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / COMMIT
    for name, data in files.items():
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return snapshot


class HubServer(LoopbackServer):
    """Files of Hub repositories served on 127.0.0.1 (see module docstring); every path asked is recorded."""

    def __init__(
        self,
        files: dict[tuple[str, str], bytes],
        etags: dict[tuple[str, str], str] | None = None,
        sizes: dict[tuple[str, str], int] | None = None,
    ):
        self.requests: list[str] = []
        self.files = files
        self.created: list[dict] = []
        server = self

        class Handler(QuietHandler):
            def do_POST(self) -> None:
                path = urlsplit(self.path).path
                server.requests.append(f"POST {path}")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                repo = path.removeprefix("/api/models/").rpartition("/")[0].rpartition("/")[0]
                if path == "/api/repos/create":
                    request = json.loads(body)
                    server.created.append(request)
                    return self._json({"url": f"{server.url()}/{request['organization']}/{request['name']}"})
                if path == "/api/validate-yaml":
                    return self._json({})
                if path.endswith("/preupload/main"):  # every file inline in the commit ("regular")
                    names = [entry["path"] for entry in json.loads(body)["files"]]
                    modes = [{"path": name, "uploadMode": "regular", "shouldIgnore": False} for name in names]
                    return self._json({"files": modes})
                if path.endswith("/commit/main"):  # one JSON object a line: the header, then the files
                    for item in map(json.loads, body.decode().splitlines()):
                        if item["key"] == "file":
                            files[(repo, item["value"]["path"])] = base64.b64decode(item["value"]["content"])
                    return self._json(
                        {"commitUrl": f"{server.url()}/{repo}/commit/{COMMIT}", "commitOid": COMMIT}
                    )
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _json(self, answer: dict) -> None:
                data = json.dumps(answer).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def answer(self, body: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                server.requests.append(f"{self.command} {path}")
                repo, _, rest = path.lstrip("/").partition("/resolve/")
                name = rest.partition("/")[2]
                data = files.get((repo, name)) if rest else None
                if data is None:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                etag = (etags or {}).get((repo, name), hashlib.sha256(data).hexdigest())
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("X-Linked-Etag", f'"{etag}"')
                self.send_header("ETag", f'"{etag}"')
                self.send_header("X-Linked-Size", str((sizes or {}).get((repo, name), len(data))))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

        super().__init__(Handler)
