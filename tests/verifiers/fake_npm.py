"""A fake npm registry on 127.0.0.1 serving the fixtures in data/cdn (see build_fixtures.py there):
the two answers the CDN shim needs, GET /NAME (metadata) and GET /NAME/-/FILE.tgz. Tests and the
verify benchmark point the shim at it, so no page under test reaches a host."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote

DATA = Path(__file__).parent / "data" / "cdn"


class FakeRegistry:
    def __init__(self) -> None:
        self.hits: list[str] = []
        self.entries = json.loads((DATA / "registry.json").read_text())
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server API
                path = unquote(self.path.split("?")[0]).lstrip("/")
                registry.hits.append(path)
                if "/-/" in path:
                    file = DATA / "tarballs" / path.rsplit("/-/", 1)[1]
                    body, kind = (file.read_bytes(), "application/octet-stream") if file.is_file() else (None, "")
                else:
                    entry = registry.entries.get(path)
                    body = json.dumps(entry).replace("{registry}", registry.url).encode() if entry else None
                    kind = "application/json"
                if body is None:
                    self.send_response(404)
                    self.end_headers()
                    self.wfile.write(b'{"error":"Not found"}')
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def tarball_hits(self) -> int:
        return sum(h.endswith(".tgz") for h in self.hits)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
