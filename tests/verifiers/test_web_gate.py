"""A redirect from the app's own server cannot take the page off the machine.

The request gate sees only a redirect's first hop (Chromium follows a 3xx without routing it again);
the browser's dead proxy for everything not on loopback catches the rest, and the evidence lists the
request as blocked. The host is under .invalid, so nothing could answer it even with a network: what is
checked is how it failed (at the proxy, not at name resolution).
"""

from __future__ import annotations

import json
import sys

import pytest

from envfarm.verifiers.web.script import load_script
from envfarm.verifiers.web.verifier import verify_web_async

pytestmark = pytest.mark.browser

SERVER = '''
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/":
            body = b'<!doctype html><link rel="icon" href="data:,"><h1>redirects</h1><script src="/away.js"></script>'
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(302)
            self.send_header("location", "http://envfarm-test.invalid/leak.js")
            self.end_headers()

    def log_message(self, *a):
        pass

ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''


def test_a_redirect_off_the_machine_is_blocked_and_recorded(web, tmp_path):
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "server.py").write_text(SERVER)
    app = {"root": str(tmp_path / "app"), "command": f"{sys.executable} server.py {{port}}"}
    web.run(verify_web_async(web.host, app, load_script({"steps": [{"goto": "/"}]}), tmp_path / "out"))
    session = json.loads((tmp_path / "out" / "report.json").read_text())["session"]
    assert "http://envfarm-test.invalid/leak.js" in session["blocked_requests"]
    assert not any("envfarm-test.invalid" in f for f in session["failed_requests"])
