"""The proxy's dashboard in a real browser: headless Chromium driven over the DevTools
protocol (websocket-client, in the virtualenv .ci/run makes).

Run by tests/cli/dashboard.rs with one argument, a JSON object:
  {"chromium": ..., "proxy": PORT, "shot": PATH, "main_body": TEXT,
   "new": {"worktree": NAME, "service": "web", "port": PORT}}
Any failed check raises (exit 1). On success the last stdout line is a JSON summary.
"""

import base64
import http.server
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import websocket

CONF = json.loads(sys.argv[1])
DASH = f"http://localhost:{CONF['proxy']}/"


class Browser:
    def __init__(self):
        self.profile = tempfile.mkdtemp(prefix="wp-chromium-")
        self.proc = subprocess.Popen(
            [CONF["chromium"], "--headless=new", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--no-default-browser-check", "--disable-extensions",
             "--remote-debugging-port=0", f"--user-data-dir={self.profile}",
             "--window-size=1200,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        port = None
        deadline = time.time() + 30
        while port is None:
            assert time.time() < deadline, "chromium did not start"
            line = self.proc.stderr.readline()
            m = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", line)
            if m:
                port = int(m.group(1))
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()
        targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
        page = next(t for t in targets if t["type"] == "page")
        self.ws = websocket.create_connection(page["webSocketDebuggerUrl"], timeout=30)
        self.next = 0
        self.events = []
        self.send("Page.enable")
        self.send("Network.enable")

    def send(self, method, **params):
        self.next += 1
        me = self.next
        self.ws.send(json.dumps({"id": me, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("id") == me:
                assert "error" not in msg, (method, msg)
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method, timeout=15):
        deadline = time.time() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == method:
                    return self.events.pop(i)
            assert time.time() < deadline, f"no {method}"
            self.ws.settimeout(max(0.1, deadline - time.time()))
            self.events.append(json.loads(self.ws.recv()))

    def go(self, url):
        self.events.clear()
        self.send("Page.navigate", url=url)
        self.wait_event("Page.loadEventFired")

    def js(self, expression):
        r = self.send("Runtime.evaluate", expression=expression, returnByValue=True,
                      awaitPromise=True)
        assert "exceptionDetails" not in r, r
        return r["result"].get("value")

    def close(self):
        self.ws.close()
        self.proc.kill()
        self.proc.wait()


def serve(port, body):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main():
    answer = json.load(urllib.request.urlopen(DASH + "worktrees.json"))
    expected = sorted(
        (w["name"], s)
        for r in answer["repositories"] for w in r["worktrees"] for s in (w.get("urls") or {}))
    assert expected, answer
    b = Browser()
    try:
        b.go(DASH)
        # What the page asked for: only the proxy itself (no external request).
        requested = [e["params"]["request"]["url"] for e in b.events
                     if e.get("method") == "Network.requestWillBeSent"]
        b.js("new Promise(r => setTimeout(r, 1500))")  # one refresh from the JSON
        requested += [e["params"]["request"]["url"] for e in b.events
                      if e.get("method") == "Network.requestWillBeSent"]
        assert requested and all(u.startswith(DASH) for u in requested), requested
        assert DASH + "worktrees.json" in requested, requested
        shot = base64.b64decode(b.send("Page.captureScreenshot", format="png")["data"])
        assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 5000, len(shot)
        with open(CONF["shot"], "wb") as f:
            f.write(shot)

        links = b.js("""[...document.querySelectorAll('a.proxied')].map(
            a => [a.dataset.worktree, a.dataset.service, a.href])""")
        assert sorted((w, s) for w, s, _ in links) == expected, (links, expected)
        direct = b.js("document.querySelectorAll('a.direct').length")
        assert direct == len(expected), direct
        order = b.js("[...document.querySelectorAll('section.repo tbody tr')].map(t => t.dataset.worktree)")
        assert order[0] == "main", order

        # Following main's link through the proxy reaches main's server.
        main_href = next(h for w, s, h in links if w == "main" and s == "web")
        b.go(main_href)
        body = b.js("document.body.innerText")
        assert body.startswith(CONF["main_body"]), body

        # A new worktree's server, started while the page is open: up within two seconds.
        new = CONF["new"]
        b.go(DASH)
        cell = f"td.state[data-worktree='{new['worktree']}'][data-service='{new['service']}']"
        assert b.js(f"document.querySelector(\"{cell}\").className") == "state down"
        started = time.time()
        server = serve(new["port"], f"new worktree {new['worktree']}")
        while "up" not in b.js(f"document.querySelector(\"{cell}\").className").split():
            assert time.time() - started < 2.0, "not shown up within 2 s"
            time.sleep(0.05)
        took = time.time() - started
        new_href = next(h for w, s, h in links if w == new["worktree"] and s == new["service"])
        b.go(new_href)
        assert b.js("document.body.innerText").startswith(f"new worktree {new['worktree']}")
        server.shutdown()
    finally:
        b.close()
    print(json.dumps({"links": len(links), "up_after_s": round(took, 3), "shot": len(shot)}))


main()
