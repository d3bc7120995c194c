#!/usr/bin/env python3
"""A page for the demo engine: sets a persistent cookie by header and one by
script, and logs the Cookie header of every request (cookie names only), so a
restarted engine shows whether its jar came back through cookiefs."""
import http.server
import sys

PAGE = b"""<!doctype html><title>cookiefs demo</title>
<script>document.cookie = "js=from-script; max-age=31536000; path=/";</script>
<p>cookiefs demo page</p>"""


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        names = [c.split("=")[0].strip() for c in (self.headers.get("Cookie") or "").split(";") if c.strip()]
        print(f"cookie-page: request {self.path} carries cookies: {','.join(names) or 'none'}", flush=True)
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Set-Cookie", "hdr=from-header; Max-Age=31536000; Path=/")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
