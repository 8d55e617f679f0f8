"""A stand-in for an app's own start command: waits before listening, then serves this folder."""

import functools
import http.server
import os
import sys
import time

time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0.5)
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=os.path.dirname(os.path.abspath(__file__)))
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), handler).serve_forever()
