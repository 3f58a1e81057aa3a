#!/usr/bin/env python3
"""Opens a page in headless Chromium (the distribution's package) over the DevTools protocol,
prints what the rendered page shows as JSON (summary cards, every chart's bars with their drawn
size, every table's rows as the reader sees them) and saves a full-page screenshot.

    report_browser.py PAGE.html SCREENSHOT.png [CHROMIUM]

Chromium runs as root with --no-sandbox, in a fresh profile, with nothing that reaches the
network (no background networking, component updates, sync or first-run tasks).
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import websocket

MEASURE = r"""
(() => {
  const box = e => { const b = e.getBoundingClientRect(); return {w: b.width, h: b.height}; };
  const rows = t => [...t.tBodies[0].rows].map(r => ({data: {...r.dataset},
      cells: [...r.cells].map(c => c.innerText.trim())}));
  return {
    title: document.title,
    sections: [...document.querySelectorAll('section')].map(s => s.id),
    totals: Object.fromEntries([...document.querySelectorAll('dd[id^="total-"]')]
        .map(d => [d.id.slice(6), d.innerText.trim()])),
    charts: Object.fromEntries([...document.querySelectorAll('svg.chart')].map(s => [s.id, {
        size: box(s),
        bars: [...s.querySelectorAll('rect.bar')].map(r => ({
            key: r.dataset.series || r.dataset.label, count: Number(r.dataset.count), ...box(r)})),
    }])),
    legends: [...document.querySelectorAll('ul.legend')].map(u => [...u.children].map(li => li.innerText.trim())),
    tables: Object.fromEntries([...document.querySelectorAll('table')].map((t, i) =>
        [t.id || (t.dataset.intent ? 'dests:' + t.dataset.intent : 'table' + i), rows(t)])),
    learned: (document.getElementById('learned') || {}).innerText || null,
    external: [...document.querySelectorAll('[src],link[href],script')].length,
  };
})()
"""


class Cdp:
    def __init__(self, url):
        self.ws = websocket.create_connection(url, timeout=60, suppress_origin=True)
        self.next = 0
        self.events = []

    def call(self, method, session=None, **params):
        self.next += 1
        msg = {"id": self.next, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        self.ws.send(json.dumps(msg))
        while True:
            m = json.loads(self.ws.recv())
            if m.get("id") == self.next:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m["result"]
            self.events.append(m)

    def wait_event(self, name):
        while True:
            for i, m in enumerate(self.events):
                if m.get("method") == name:
                    return self.events.pop(i)
            self.events.append(json.loads(self.ws.recv()))


def main():
    page, shot = os.path.abspath(sys.argv[1]), sys.argv[2]
    exe = sys.argv[3] if len(sys.argv) > 3 else (shutil.which("chromium") or "/usr/bin/chromium")
    profile = tempfile.mkdtemp(prefix="intentgate-chromium-")
    proc = subprocess.Popen([
        exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--disable-default-apps", "--disable-extensions", "--hide-scrollbars",
        f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank",
    ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.monotonic() + 120
        while not (os.path.exists(port_file) and len(open(port_file).read().split("\n")) >= 2):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("chromium did not start its DevTools endpoint")
            time.sleep(0.05)
        port, path = open(port_file).read().split("\n")[:2]
        cdp = Cdp(f"ws://127.0.0.1:{port}{path}")
        target = cdp.call("Target.createTarget", url="about:blank")["targetId"]
        s = cdp.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        cdp.call("Page.enable", s)
        cdp.call("Emulation.setDeviceMetricsOverride", s, width=1280, height=900,
                 deviceScaleFactor=1, mobile=False)
        cdp.call("Page.navigate", s, url="file://" + page)
        cdp.wait_event("Page.loadEventFired")
        res = cdp.call("Runtime.evaluate", s, expression=MEASURE, returnByValue=True)
        if "exceptionDetails" in res:
            raise SystemExit(f"measuring failed: {res['exceptionDetails']}")
        size = cdp.call("Page.getLayoutMetrics", s)["cssContentSize"]
        img = cdp.call("Page.captureScreenshot", s, format="png", captureBeyondViewport=True,
                       clip={"x": 0, "y": 0, "width": 1280, "height": size["height"], "scale": 1})
        with open(shot, "wb") as f:
            f.write(base64.b64decode(img["data"]))
        print(json.dumps(res["result"]["value"]))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
