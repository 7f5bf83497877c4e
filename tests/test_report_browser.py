"""report.html in a real headless browser (Debian's chromium, driven over the DevTools protocol on a pipe,
standard library only): every image must decode and every link must load, with the images embedded and
with ``embed_images=False`` (relative links). CI (.ci/run) installs chromium and sets EMO_REQUIRE_BROWSER=1,
so there a missing browser fails instead of skipping."""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.test_report import make_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def browser_path() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("EMO_REQUIRE_BROWSER"):
        pytest.fail("EMO_REQUIRE_BROWSER is set but no chromium is installed (apt-get install chromium)")
    pytest.skip("no chromium on this machine (CI installs Debian's chromium)")


class Browser:
    """Headless chromium with ``--remote-debugging-pipe``: JSON messages, NUL-terminated, on fds 3 (in) / 4 (out)."""

    def __init__(self, executable: str, profile: Path, timeout: float = 90.0):
        self.timeout = timeout
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire():  # runs in the child: the protocol's fixed descriptors
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.proc = subprocess.Popen(
            [executable, "--headless=new", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--no-default-browser-check", "--allow-file-access-from-files",
             f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=wire, close_fds=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)
        os.close(self._to_child)
        os.close(self._from_child)

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_child], [], [], left)[0]:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_child, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        deadline = time.monotonic() + self.timeout
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read_message(deadline)
            self.events.append(event)
            if event.get("method") == method:
                return event


# Runs inside the page: every <img> must have decoded, every link must load (a synchronous XHR; file:// pages
# may read files with --allow-file-access-from-files, and a missing file throws).
CHECK_PAGE = """
JSON.stringify({
  images: [...document.images].map(i => ({src: i.getAttribute('src').slice(0, 60),
                                           ok: i.complete && i.naturalWidth > 0})),
  links: [...document.links].map(a => {
    try { const r = new XMLHttpRequest(); r.open('GET', a.href, false); r.send();
          return {href: a.getAttribute('href'), ok: r.responseText.length > 0}; }
    catch (e) { return {href: a.getAttribute('href'), ok: false}; }
  })
})
"""


def open_and_check(executable: str, page: Path, profile: Path) -> dict:
    """{"images": [...], "links": [...], "failed_requests": [...]} of `page` after its load event."""
    browser = Browser(executable, profile)
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            browser.send(f"{domain}.enable", session=session)
        nav = browser.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        assert not nav.get("errorText"), nav
        browser.wait_for("Page.loadEventFired")
        value = browser.send("Runtime.evaluate", {"expression": CHECK_PAGE, "returnByValue": True},
                             session=session)["result"]["value"]
        result = json.loads(value)
        urls = {e["params"]["requestId"]: e["params"]["request"]["url"] for e in browser.events
                if e.get("method") == "Network.requestWillBeSent"}
        result["failed_requests"] = [urls.get(e["params"]["requestId"], "?") for e in browser.events
                                     if e.get("method") == "Network.loadingFailed"]
        return result
    finally:
        browser.close()


def broken(result: dict) -> list[str]:
    return ([f"image {i['src']}" for i in result["images"] if not i["ok"]]
            + [f"link {link['href']}" for link in result["links"] if not link["ok"]]
            + [f"request {u}" for u in result["failed_requests"]])


def test_report_html_loads_every_image_and_link_in_chromium(tmp_path):
    executable = browser_path()
    report, out, _ = make_report(tmp_path)
    report.write(out, metrics={"fid": 40.1}, embed_images=True)
    embedded = open_and_check(executable, out / "report.html", tmp_path / "profile-a")
    assert len(embedded["images"]) == 3 and embedded["links"], embedded  # a plot, two thumbnails, a link
    assert not broken(embedded), broken(embedded)
    assert all(i["src"].startswith("data:image/") for i in embedded["images"])

    report.write(out, metrics={"fid": 40.1}, embed_images=False)
    linked = open_and_check(executable, out / "report.html", tmp_path / "profile-b")
    assert len(linked["images"]) == 3 and not broken(linked), broken(linked)
    assert not any(i["src"].startswith("data:") for i in linked["images"])

    # the check itself can fail: a linked image and a linked file that are gone are both reported
    (tmp_path / "samples" / "im1.png").unlink()
    (out / "metrics.json").unlink()
    gone = broken(open_and_check(executable, out / "report.html", tmp_path / "profile-c"))
    assert any("im1.png" in item for item in gone) and any("metrics.json" in item for item in gone), gone
