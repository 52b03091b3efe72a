#!/usr/bin/env python3
"""Loads each dashboard page in a real headless Chromium and checks it.

Talks to the browser over the DevTools protocol on a pipe (--remote-debugging-pipe: fds 3 and 4,
JSON messages separated by NUL), so only the Python standard library is needed. For each page:
the session cookie is set (as the login form would), the page is loaded, console messages and
uncaught exceptions are collected (there must be none at level error/warning), every chart must be
an <svg> with a visible size and drawn marks, and a screenshot is written.

Usage: check.py BASE_URL SESSION_COOKIE OUT_DIR PATH...
"""
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

TIMEOUT_S = 60


def _onto_3_and_4(read_end, write_end):
    """In the child: the command pipe on fd 3, the reply pipe on fd 4, both inheritable (copied
    high first, so a pipe already on 3 or 4 is neither clobbered nor left close-on-exec)."""
    r, w = os.dup(read_end), os.dup(write_end)
    os.dup2(r, 3)
    os.dup2(w, 4)


class Browser:
    def __init__(self):
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if not exe:
            sys.exit("chromium is not installed")
        self.profile = tempfile.mkdtemp(prefix="im-chromium-")
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()
        # The browser reads commands on fd 3 and writes replies on fd 4.
        self.proc = subprocess.Popen(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={self.profile}", "--window-size=1280,1600", "--remote-debugging-pipe",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False,  # the dup2s below make fds 3 and 4; every other fd is close-on-exec
            preexec_fn=lambda: _onto_3_and_4(to_browser_r, from_browser_w),
        )
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.next_id = 0
        self.buf = b""
        self.events = []

    def _read_message(self, deadline):
        while b"\0" not in self.buf:
            if time.time() > deadline:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self.from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method, params=None, session=None):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + TIMEOUT_S
        while True:
            m = self._read_message(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError(f"{method}: {m['error']}")
                return m.get("result", {})
            self.events.append(m)

    def wait_event(self, method, session, deadline):
        while True:
            for i, e in enumerate(self.events):
                if e.get("method") == method and e.get("sessionId") == session:
                    return self.events.pop(i)
            self.events.append(self._read_message(deadline))

    def close(self):
        try:
            self.send("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


CHECK_CHARTS = """(() => {
  const svgs = [...document.querySelectorAll('figure.chart > svg')];
  return JSON.stringify({
    title: document.title,
    charts: svgs.map(s => { const r = s.getBoundingClientRect();
      return {w: r.width, h: r.height, marks: s.querySelectorAll('circle, polyline, path, rect').length}; }),
    login: !!document.querySelector('form[action="/login"]'),
    text: document.body.innerText.slice(0, 4000),
  });
})()"""


def check_page(b, base, cookie, path, out_dir, failures):
    target = b.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = b.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        b.send(f"{domain}.enable", session=session)
    b.send("Network.setCookie", {"name": "inframind_session", "value": cookie, "url": base + "/",
                                 "httpOnly": True, "sameSite": "Strict"}, session=session)
    b.send("Emulation.setDeviceMetricsOverride",
           {"width": 1280, "height": 1600, "deviceScaleFactor": 1, "mobile": False}, session=session)
    b.send("Page.navigate", {"url": base + path}, session=session)
    b.wait_event("Page.loadEventFired", session, time.time() + TIMEOUT_S)
    result = b.send("Runtime.evaluate", {"expression": CHECK_CHARTS, "returnByValue": True},
                    session=session)
    page = json.loads(result["result"]["value"])
    shot = b.send("Page.captureScreenshot", {"format": "png"}, session=session)
    name = (path.strip("/").replace("/", "_").replace("%", "") or "overview") + ".png"
    with open(os.path.join(out_dir, name), "wb") as f:
        f.write(base64.b64decode(shot["data"]))
    problems = []
    for e in b.events:
        if e.get("sessionId") != session:
            continue
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.exceptionThrown":
            problems.append(f"exception: {p.get('exceptionDetails', {}).get('text')}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning", "assert"):
            problems.append(f"console {p.get('type')}: {p.get('args')}")
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
            problems.append(f"log {p['entry']['level']}: {p['entry'].get('text')} {p['entry'].get('url', '')}")
    b.events = [e for e in b.events if e.get("sessionId") != session]
    if page["login"]:
        problems.append("shown the login form: the session cookie was not accepted")
    if not page["charts"] and path not in ("/models", "/trainingjobs"):
        problems.append("no chart on the page")
    for i, c in enumerate(page["charts"]):
        if c["w"] < 100 or c["h"] < 100 or c["marks"] < 3:
            problems.append(f"chart {i} did not render: {c}")
    b.send("Target.closeTarget", {"targetId": target})
    status = "ok" if not problems else "FAILED"
    print(f"{status:6} {path:32} {len(page['charts'])} charts, screenshot {name}, title {page['title']!r}")
    for p in problems:
        print(f"       {p}")
        failures.append(f"{path}: {p}")
    return page


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    base, cookie, out_dir, paths = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3], sys.argv[4:]
    os.makedirs(out_dir, exist_ok=True)
    b = Browser()
    failures = []
    try:
        pages = {p: check_page(b, base, cookie, p, out_dir, failures) for p in paths}
    finally:
        b.close()
    overview = pages.get("/")
    if overview and "faster at the median" not in overview["text"]:
        failures.append("/: the overview does not show the savings effect")
    if failures:
        sys.exit(f"{len(failures)} browser check(s) failed")
    print(f"all {len(paths)} pages passed; screenshots in {out_dir}")


if __name__ == "__main__":
    main()
