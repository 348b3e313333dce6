"""report.html: self-contained, escaped, and rendered for real in headless Chromium.

The browser tests need the Debian packages `chromium` and `chromium-driver`. The session fixture
installs them with apt-get when they are missing; it skips only where apt-get cannot be used and
CI is not set. In CI (CI=true) a browser that cannot be installed is a failure.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import free_port
from test_frontier import FRONTIER_ROWS, PGR_ROWS, row, write_cells

from w2sweep.frontier import write_frontier
from w2sweep.report import MAX_ROWS, render_report
from w2sweep.storage import Storage

ROWS = [*FRONTIER_ROWS, *PGR_ROWS, row(0.61, method="A", fraction=0.2, seed=1, label_cost=1.0)]
# Switches that keep a headless Chromium from reaching the network or writing outside its profile.
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--no-first-run", "--no-default-browser-check", "--hide-scrollbars"]


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    """A report written by `write_frontier` from hand-made results, as a local file."""
    root = tmp_path_factory.mktemp("report")
    storage = Storage.from_uri(str(root / "store"))
    write_cells(storage, ROWS)
    write_frontier(storage, "demo")
    path = root / "report.html"
    path.write_bytes(storage.read_bytes("demo/frontier/report.html"))
    return path


# ---- the page itself ------------------------------------------------------------------------------

def test_report_is_self_contained(report_html):
    page = report_html.read_text()
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert len([s for s in sources if s.startswith("data:image/png;base64,")]) == 3  # the three plots
    assert all(s.startswith("data:") for s in sources), [s[:40] for s in sources if not s.startswith("data:")]
    assert "<script" not in page and "url(" not in page and "@import" not in page
    assert not re.search(r"https?://", page)


def test_report_embeds_the_plots_and_tables_it_was_given():
    png = b"\x89PNG\r\n\x1a\nfake"
    page = render_report(title="t", summary={"results read": 3},
                         tables={"regimes.csv": pd.DataFrame({"budget": [8.0], "regime": ["mixed"]})},
                         images={"curves.png": png})
    assert base64.b64encode(png).decode() in page
    assert "<td>mixed</td>" in page and "<dt>results read</dt><dd>3</dd>" in page


def test_report_escapes_names_from_results():
    page = render_report(title="<b>sweep</b>", summary={"sweep": "<script>alert(1)</script>"},
                         tables={"curves.csv": pd.DataFrame({"dataset": ["<img src=x onerror=alert(1)>"]})},
                         images={})
    assert "<script>" not in page and "<img src=x" not in page and "<b>sweep" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_long_table_shows_its_first_rows_and_says_where_the_rest_is():
    page = render_report(title="t", summary={}, images={},
                         tables={"curves.csv": pd.DataFrame({"budget": range(MAX_ROWS + 5)})})
    assert page.count("<tr") == MAX_ROWS + 1  # + the header row
    assert f"First {MAX_ROWS} of {MAX_ROWS + 5} rows; all of them are in curves.csv." in page


# ---- a real browser -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Browser:
    chromium: str
    chromedriver: str


def _find_browser() -> Browser | None:
    chromium = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
    driver = shutil.which("chromedriver") or next(
        (p for p in ("/usr/lib/chromium/chromedriver", "/usr/bin/chromedriver") if os.path.exists(p)), None)
    return Browser(chromium, driver) if chromium and driver else None


def _apt_command() -> list[str] | None:
    """How to run apt-get here (as root, or through password-less sudo), or None."""
    if not shutil.which("apt-get"):
        return None
    if os.geteuid() == 0:
        return []
    if shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"], capture_output=True).returncode == 0:
        return ["sudo", "-n"]
    return None


@pytest.fixture(scope="session")
def browser() -> Browser:
    """Chromium and its WebDriver, installed with apt-get when absent."""
    found = _find_browser()
    if found:
        return found
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    prefix = _apt_command()
    if prefix is None:
        message = ("chromium/chromium-driver are not installed and apt-get is not usable here "
                   "(no apt-get, or neither root nor password-less sudo); "
                   "install them with: apt-get install -y chromium chromium-driver")
        if in_ci:
            pytest.fail(message)
        pytest.skip(message)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium", "chromium-driver"]):
        done = subprocess.run(prefix + command, env=env, capture_output=True, text=True, timeout=1200)
        if done.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed (exit {done.returncode}): "
                        f"{(done.stderr or done.stdout).strip()[-1000:]}")
    found = _find_browser()
    if not found:
        pytest.fail("apt-get installed chromium and chromium-driver, but the binaries are not on PATH")
    return found


class WebDriver:
    """A minimal W3C WebDriver client over urllib, for one Chromium session driven by chromedriver."""

    def __init__(self, browser: Browser, profile: Path, *, width: int = 1280, height: int = 1600):
        self.port = free_port()
        self.log = open(profile.parent / "chromedriver.log", "wb")
        self.proc = subprocess.Popen([browser.chromedriver, f"--port={self.port}"], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.session = None
        deadline = time.monotonic() + 30
        while True:
            try:
                if self._call("GET", "/status").get("ready"):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"chromedriver did not come up on port {self.port}")
            time.sleep(0.1)
        options = {"binary": browser.chromium,
                   "args": [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}"]}
        try:
            value = self._call("POST", "/session", {"capabilities": {"alwaysMatch": {
                "browserName": "chrome", "goog:chromeOptions": options,
                "goog:loggingPrefs": {"browser": "ALL"}}}})
        except Exception:
            self.close()
            raise
        self.session = f"/session/{value['sessionId']}"

    def _call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                return json.loads(response.read())["value"]
        except urllib.error.HTTPError as e:
            raise RuntimeError(f"WebDriver {method} {path}: HTTP {e.code}: {e.read()[:500]!r}") from None

    def open(self, url: str) -> None:
        self._call("POST", f"{self.session}/url", {"url": url})

    def run(self, script: str):
        return self._call("POST", f"{self.session}/execute/sync", {"script": script, "args": []})

    def screenshot(self) -> bytes:
        return base64.b64decode(self._call("GET", f"{self.session}/screenshot"))

    def console(self) -> list[dict]:
        """Browser log entries since the last call (console messages, failed loads), as chromedriver
        keeps them under goog:loggingPrefs."""
        try:
            return self._call("POST", f"{self.session}/se/log", {"type": "browser"})
        except RuntimeError:  # older chromedriver: the legacy endpoint
            return self._call("POST", f"{self.session}/log", {"type": "browser"})

    def close(self) -> None:
        if self.session:
            try:
                self._call("DELETE", self.session)
            except (OSError, RuntimeError):
                pass
            self.session = None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log.close()


@pytest.fixture(scope="module")
def webdriver(browser, tmp_path_factory):
    driver = WebDriver(browser, tmp_path_factory.mktemp("chromium") / "profile")
    yield driver
    driver.close()


def pixel_spread(png: bytes) -> tuple[float, int]:
    """(standard deviation of the grayscale pixels, number of distinct colors) of a PNG."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    pixels = np.asarray(image)
    gray = pixels.mean(axis=2)
    colors = len(np.unique(pixels.reshape(-1, 3)[::7], axis=0))
    return float(gray.std()), colors


def looks_blank(png: bytes) -> bool:
    std, colors = pixel_spread(png)
    return std < 5.0 or colors < 16


def errors_in(entries: list[dict]) -> list[str]:
    return [e["message"] for e in entries if e.get("level") in ("SEVERE", "ERROR")]


def test_the_checks_catch_a_blank_page_and_console_errors(webdriver, tmp_path):
    """The two checks below can fail: an empty page is blank, a broken page logs errors."""
    blank = tmp_path / "blank.html"
    blank.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body></body></html>')
    webdriver.open(blank.as_uri())
    assert looks_blank(webdriver.screenshot())
    assert errors_in(webdriver.console()) == []

    broken = tmp_path / "broken.html"
    broken.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                      '<script>console.error("boom")</script><img src="missing.png"></body></html>')
    webdriver.open(broken.as_uri())
    messages = errors_in(webdriver.console())
    assert any('"boom"' in m for m in messages) and any("missing.png" in m for m in messages)


def test_report_renders_in_chromium_without_console_errors(webdriver, report_html):
    webdriver.open(report_html.as_uri())
    title, num_images, images_loaded, num_tables = webdriver.run(
        "return [document.title, document.images.length,"
        " Array.from(document.images).every(i => i.complete && i.naturalWidth > 100),"
        " document.querySelectorAll('table.data').length]")
    assert title == "w2sweep frontier: demo"
    assert (num_images, images_loaded, num_tables) == (3, True, 5)
    assert errors_in(webdriver.console()) == []
    png = webdriver.screenshot()
    assert png.startswith(b"\x89PNG")
    assert not looks_blank(png), pixel_spread(png)


def test_report_screenshot_from_the_chromium_command_line_is_not_blank(browser, report_html, tmp_path):
    shot = tmp_path / "report.png"
    done = subprocess.run(
        [browser.chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,1600",
         "--enable-logging=stderr", "--v=0", f"--screenshot={shot}", report_html.as_uri()],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not looks_blank(shot.read_bytes()), pixel_spread(shot.read_bytes())
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
