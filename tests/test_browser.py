"""The built book in a real browser: every page loads, every image renders, the console stays clean.

Serves the HTML folder (env ``KPE_BOOK_HTML``, default ``<repo>/_build/html``) on 127.0.0.1 and
opens each page in headless Debian Chromium driven by Playwright (its bundled driver; no browser
download: ``executable_path`` points at ``/usr/bin/chromium`` or env ``KPE_CHROMIUM``).

Every page is opened once and checked at two window widths (:data:`WIDTHS`, 1,000 and 1,400 px) as a reader meets
it: nothing in the article runs past the text column or scrolls sideways (code, outputs, tables, maths), the
numbered chapters carry the same number in their title and in the sidebar, and a full-page screenshot of each
page is kept as a test artifact in ``KPE_SCREENSHOTS`` (default ``<html>/../screenshots/<width>/``).

Skipped with a reason when there is no built book, no Chromium or no Playwright, unless
``KPE_REQUIRE_BROWSER=1`` (set by ``make test``), which turns those skips into failures.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlparse

try:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
except ImportError:  # the test skips without playwright
    PlaywrightTimeout = TimeoutError

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
HTML = Path(os.environ.get("KPE_BOOK_HTML", ROOT / "_build" / "html")).resolve()
CHROMIUM = os.environ.get("KPE_CHROMIUM", "/usr/bin/chromium")
REQUIRED = os.environ.get("KPE_REQUIRE_BROWSER") == "1"
SKIP_PAGES = {"genindex.html", "search.html", "py-modindex.html"}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 120_000  # generous: a loaded 2-core machine renders MathJax slowly
# Console messages that are not errors of the book. Keep this list narrow and explained.
IGNORED_CONSOLE = ()
WIDTHS = (1000, 1400)  # window widths in CSS px: a laptop beside another window, a desktop
SHOTS = Path(os.environ.get("KPE_SCREENSHOTS", HTML.parent / "screenshots"))
NUMBERED = re.compile(r"book/chapters/0([1-5])_")  # the "Chapters" part of _toc.yml: numbered 1 to 5
REFRESH = re.compile(r"""<meta[^>]*http-equiv=["']?refresh["']?[^>]*content=["'][^"';]*;\s*url=([^"']+)""", re.I)
# MathJax 3 resolves startup.promise once the page is typeset; the flag turns that promise into something
# wait_for_function can poll (page.evaluate itself has no timeout).
MATHJAX_DONE_JS = """() => {
  const mj = window.MathJax;
  if (!mj || !mj.startup || !mj.startup.promise) return false;
  if (window.__kpeTypeset === undefined) {
    window.__kpeTypeset = false;
    mj.startup.promise.then(() => { window.__kpeTypeset = true; });
  }
  return window.__kpeTypeset && document.querySelectorAll('mjx-container').length > 0;
}"""

# Elements of the article that run past its right edge, or scroll sideways (MathJax's hidden copy for screen
# readers and zero-size or collapsed elements are not seen by a reader and are skipped).
OVERFLOW_JS = """() => {
  const art = document.querySelector('article.bd-article') || document.querySelector('main') || document.body;
  const limit = art.getBoundingClientRect().right + 2;
  const out = [];
  for (const el of art.querySelectorAll('*')) {
    if (el.closest('mjx-assistive-mml')) continue;
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0) continue;
    const cs = getComputedStyle(el);
    if (cs.visibility === 'hidden') continue;
    const scrolls = ['auto', 'scroll'].includes(cs.overflowX) && el.scrollWidth > el.clientWidth + 2;
    if (r.right > limit || scrolls) {
      const text = (el.textContent || '').trim().slice(0, 60);
      out.push(`${el.tagName.toLowerCase()}.${el.className}: ${scrolls ? 'scrolls ' + el.scrollWidth + ' > '
                + el.clientWidth : 'right ' + Math.round(r.right) + ' > ' + Math.round(limit)} px ("${text}")`);
      if (out.length >= 8) break;
    }
  }
  if (document.documentElement.scrollWidth > window.innerWidth + 1)
    out.push(`page scrolls sideways: ${document.documentElement.scrollWidth} > ${window.innerWidth} px`);
  return out;
}"""


def _unavailable() -> str | None:
    if not (HTML / "index.html").is_file():
        return f"no built book at {HTML} (run `make book` or set KPE_BOOK_HTML)"
    if not (os.access(CHROMIUM, os.X_OK) or shutil.which(CHROMIUM)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set KPE_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; its browser download is not needed)"
    return None


def _pages() -> list[str]:
    if not HTML.is_dir():
        return []
    return sorted(p.relative_to(HTML).as_posix() for p in HTML.rglob("*.html")
                  if p.name not in SKIP_PAGES and not any(part.startswith("_") for part in p.relative_to(HTML).parts))


@pytest.fixture(scope="module")
def server():
    reason = _unavailable()
    if reason:
        (pytest.fail if REQUIRED else pytest.skip)(reason)

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(HTML)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    profile = tempfile.mkdtemp(prefix="kpe-chromium-")
    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(profile, executable_path=CHROMIUM, headless=True,
                                                        args=CHROMIUM_ARGS)
        yield context
        context.close()
    shutil.rmtree(profile, ignore_errors=True)


def test_book_lists_pages():
    reason = _unavailable()
    if reason and not REQUIRED:
        pytest.skip(reason)
    assert "index.html" in _pages() or (HTML / "index.html").is_file(), f"no index.html in {HTML}"
    chapters = [p for p in _pages() if p.startswith("book/chapters/")]
    assert chapters, f"no executed chapter pages under {HTML / 'book/chapters'}"


def _redirect_target(page_path: str) -> str | None:
    """Where a ``<meta http-equiv="Refresh">`` page sends the reader (jupyter-book's root ``index.html``), read from the
    file on disk: deciding from the live page raced the redirect itself and once hung CI for an hour."""
    match = REFRESH.search((HTML / page_path).read_text(encoding="utf-8", errors="replace"))
    return match.group(1).strip() if match else None


@pytest.mark.parametrize("page_path", _pages() or ["index.html"])
def test_page_renders(server, browser, page_path):
    """Loads each page once, checks what does not depend on the window, then each width in :data:`WIDTHS`."""
    page = browser.new_page()
    page.set_default_timeout(TIMEOUT_MS)  # also bounds title(), count(), inner_text() and screenshots
    page.set_viewport_size({"width": WIDTHS[0], "height": 900})
    console_errors, failed = [], []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console_errors.append(f"uncaught: {e}"))
    page.on("requestfailed", lambda r: failed.append(f"{r.url} ({r.failure})"))
    page.on("response", lambda r: failed.append(f"{r.url} (HTTP {r.status})") if r.status >= 400 else None)
    try:
        target = _redirect_target(page_path)
        if target is not None:  # the target is a page of its own, checked by its own test
            assert (HTML / page_path).parent.joinpath(target).resolve().is_file(), \
                f"{page_path} redirects to {target!r}, which is not in the book"
            page.goto(f"{server}/{page_path}", wait_until="commit", timeout=TIMEOUT_MS)
            page.wait_for_url(f"**/{target}", timeout=TIMEOUT_MS)
            return
        response = page.goto(f"{server}/{page_path}", wait_until="load", timeout=TIMEOUT_MS)
        assert response is not None and response.status == 200, f"{page_path}: HTTP {response and response.status}"
        assert page.title().strip(), f"{page_path}: empty <title>"
        # Lazy images below the fold would never load in a headless window: ask for all of them now.
        page.evaluate("document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
        page.wait_for_function("Array.from(document.images).every(i => i.complete)", timeout=TIMEOUT_MS)
        broken = page.evaluate("Array.from(document.images).filter(i => !(i.naturalWidth > 0))"
                               ".map(i => i.getAttribute('src'))")
        assert not broken, f"{page_path}: images that did not render: {broken}"
        if page.locator(".math").count():  # MathJax is served by the book itself (sphinx-mathjax-offline)
            page.wait_for_function(MATHJAX_DONE_JS, timeout=TIMEOUT_MS)
        try:  # let late requests (fonts) settle; a page that keeps one open is not an error by itself
            page.wait_for_load_state("networkidle", timeout=5_000)
        except PlaywrightTimeout:
            pass
        external = [f for f in failed if urlparse(f.split(" ")[0]).hostname not in ("127.0.0.1", None)]
        assert not external, f"{page_path}: the page needs resources from outside the book: {external}"
        assert not failed, f"{page_path}: failed requests: {failed}"
        errors = [m for m in console_errors if not any(s in m for s in IGNORED_CONSOLE)]
        assert not errors, f"{page_path}: console errors: {errors}"
        numbered = NUMBERED.match(page_path)
        if numbered:
            _check_numbering(page, page_path, numbered.group(1))
            assert page.locator("article img").count(), f"{page_path}: a chapter without a figure"
        for width in WIDTHS:
            page.set_viewport_size({"width": width, "height": 900})
            shot = SHOTS / str(width) / (page_path.replace("/", "_").removesuffix(".html") + ".png")
            shot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shot), full_page=True)
            overflow = page.evaluate(OVERFLOW_JS)
            assert not overflow, f"{page_path} at {width} px: content wider than the page: {overflow}"
    finally:
        page.close()


def _check_numbering(page, page_path: str, number: str) -> None:
    """The chapter's title and its sidebar entry both start with ``<number>.``."""
    title = page.locator("article h1").first.inner_text().strip()
    assert title.startswith(f"{number}."), f"{page_path}: title {title!r} is not numbered {number}."
    links = page.locator("nav.bd-docs-nav a.current")  # the sidebar marks the page being read
    assert links.count(), f"{page_path}: no sidebar entry"
    entry = links.first.inner_text().strip()
    assert entry.startswith(f"{number}."), f"{page_path}: sidebar entry {entry!r} is not numbered {number}."
