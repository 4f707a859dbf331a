"""Browser check of the built site (`make site-check`, step 4 of `make test`).

Every HTML page of _build/html is opened in Chromium, served from 127.0.0.1, and must:

- load with HTTP 200, and every resource it loads from the local server must answer below 400;
- show every image (`naturalWidth > 0` once loaded);
- have its math typeset by MathJax: each `.math` node Sphinx emitted holds an `mjx-container`, no MathJax error
  node appears, and no `$...$` or `\\(` is left as plain text in the prose (a sign the MyST parser missed it);
- turn every saved ipywidget view (`script[type="application/vnd.jupyter.widget-view+json"]`) into a rendered
  widget, from the widget state stored in the notebook;
- make no request to another machine: every request is routed, those to 127.0.0.1/localhost and data:/blob:
  pass, all others are aborted and recorded, and the record must be empty;
- log no console error and throw no page error, apart from the short allow-list below.

A failure names the page and lists every problem found on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin, urlparse

import pytest
import yaml


ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "_build" / "html"  # the same folder the site_dir fixture checks
LOCAL_HOSTS = {"127.0.0.1", "localhost"}
LOCAL_SCHEMES = {"data", "blob", "about"}
NAVIGATION_TIMEOUT_MS = 30_000
RENDER_TIMEOUT_MS = 20_000  # MathJax and the widget manager typeset asynchronously after `load`

# Console messages that are not problems with this site. Each entry: (compiled regex, why it is harmless).
# Empty on purpose: the two errors a stock Jupyter Book page logs were fixed at their source instead, namely
# the theme's "Got invalid theme mode" (html_context.default_mode in _config.yml) and the widgets' MathJax 2
# call "reading 'Queue'" (book/_static/ipywidgets_offline.js). Add an entry only with a comment saying why.
CONSOLE_ALLOW_LIST: list[tuple[re.Pattern[str], str]] = []

# Folders of the build that hold assets and copies of the sources, not pages.
NOT_PAGES = {"_static", "_sources", "_images"}


def built_pages() -> list[str]:
    """Every HTML page of the built site, relative to _build/html."""
    if not SITE.is_dir():
        return []
    return sorted(
        path.relative_to(SITE).as_posix()
        for path in SITE.rglob("*.html")
        if path.relative_to(SITE).parts[0] not in NOT_PAGES
    )


def is_local(url: str) -> bool:
    parsed = urlparse(url)
    return parsed.scheme in LOCAL_SCHEMES or (parsed.scheme in {"http", "https", "ws", "wss"} and parsed.hostname in LOCAL_HOSTS)


def allowed_console_message(text: str) -> bool:
    return any(pattern.search(text) for pattern, _why in CONSOLE_ALLOW_LIST)


@dataclass
class PageRecord:
    """What the browser saw while one page loaded."""

    outside_requests: list[str] = field(default_factory=list)
    failed_responses: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)


# ---- JavaScript run in the page -----------------------------------------------------------------------------

JS_IMAGES_NOT_SHOWN = """
async () => {
  const images = [...document.images];
  for (const img of images) { if (img.loading === 'lazy') img.loading = 'eager'; }  // load off-screen ones too
  await Promise.all(images.map(img => img.complete ? null : new Promise(done => {
    img.addEventListener('load', done); img.addEventListener('error', done);
  })));
  return {count: images.length,
          broken: images.filter(img => !(img.naturalWidth > 0)).map(img => img.currentSrc || img.src || img.outerHTML.slice(0, 120))};
}
"""

JS_MATH_STATE = r"""
() => {
  const nodes = [...document.querySelectorAll('.math')];
  const errors = [...document.querySelectorAll('mjx-merror, [data-mml-node="merror"]')];
  // Text the reader would see as raw TeX: $...$ or \( \[ outside code, scripts and typeset math.
  const skip = 'pre, code, script, style, textarea, mjx-container, .highlight, .math';
  const leftovers = [];
  const main = document.querySelector('main') || document.body;
  const walker = document.createTreeWalker(main, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    if (node.parentElement && node.parentElement.closest(skip)) continue;
    const hit = node.textContent.match(/\$[^$\s][^$\n]*\$|\\\(|\\\[/);
    if (hit) leftovers.push(node.textContent.trim().slice(0, 100));
  }
  return {
    mathjax: typeof window.MathJax === 'object' && !!window.MathJax.startup,
    nodes: nodes.length,
    typeset: nodes.filter(n => n.querySelector('mjx-container')).length,
    unrendered: nodes.filter(n => !n.querySelector('mjx-container')).map(n => n.textContent.trim().slice(0, 100)),
    errors: errors.map(e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 100)),
    leftovers: leftovers,
  };
}
"""

JS_WIDGET_VIEWS = """
() => [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')].map(script => {
  let modelId = '?';
  try { modelId = JSON.parse(script.textContent).model_id; } catch (e) {}
  // The HTML manager renders each view into a div.widget-subarea it inserts just before the script tag.
  const area = script.previousElementSibling;
  const rendered = !!(area && area.classList.contains('widget-subarea') && area.querySelector('.jupyter-widgets'));
  return {modelId, rendered};
})
"""

JS_ALL_WIDGETS_RENDERED = """
() => {
  const scripts = [...document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')];
  return scripts.every(s => { const a = s.previousElementSibling;
                              return a && a.classList.contains('widget-subarea') && a.querySelector('.jupyter-widgets'); });
}
"""


def meta_refresh_target(html: str) -> str | None:
    """The URL of a `<meta http-equiv="refresh" content="0; url=...">` redirect page (the site's index.html)."""
    match = re.search(r'<meta[^>]+http-equiv="refresh"[^>]+content="\s*\d+\s*;\s*url=([^"]+)"', html, re.I)
    return match.group(1).strip() if match else None


# ---- the checks ---------------------------------------------------------------------------------------------


def test_every_toc_entry_was_built(site_dir: Path) -> None:
    """Each file listed in _toc.yml has its page in the build (a toc typo would otherwise drop a chapter)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]

    def walk(entries: list[dict]) -> None:
        for entry in entries:
            if "file" in entry:
                files.append(entry["file"])
            for key in ("chapters", "sections", "parts"):
                walk(entry.get(key, []))

    walk(toc.get("parts", []) + toc.get("chapters", []))
    missing = [f for f in files if not (site_dir / f"{f}.html").is_file()]
    assert not missing, f"_toc.yml lists pages that were not built: {missing}"


@pytest.mark.parametrize("page_path", built_pages() or ["(site not built)"])
def test_page(page_path: str, site_dir: Path, base_url: str, browser, page_stats: list) -> None:
    html = (site_dir / page_path).read_text(encoding="utf-8")
    url = f"{base_url}/{page_path}"
    record = PageRecord()
    problems: list[str] = []
    math: dict = {}
    views: list[dict] = []
    n_views = html.count('type="application/vnd.jupyter.widget-view+json"')
    n_images = 0

    context = browser.new_context(viewport={"width": 1280, "height": 900})

    def route_request(route) -> None:
        if is_local(route.request.url):
            route.continue_()
        else:
            record.outside_requests.append(route.request.url)
            route.abort()

    context.route("**/*", route_request)
    page = context.new_page()
    page.set_default_timeout(RENDER_TIMEOUT_MS)
    page.on("console", lambda msg: record.console_errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: record.page_errors.append(str(exc)))
    page.on("response", lambda r: record.failed_responses.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on(
        "requestfailed",
        lambda r: None if r.url in record.outside_requests else record.failed_requests.append(f"{r.url} ({r.failure})"),
    )
    page.on("websocket", lambda ws: None if is_local(ws.url) else record.outside_requests.append(ws.url))

    try:
        response = page.goto(url, wait_until="load", timeout=NAVIGATION_TIMEOUT_MS)
        if response is None or response.status != 200:
            problems.append(f"loading returned HTTP {response.status if response else 'nothing'}")

        target = meta_refresh_target(html)
        if target is not None:
            # A redirect page (index.html -> the root chapter): it must land on a page that exists.
            landing = urljoin(url, target)
            page.wait_for_url(landing, wait_until="load", timeout=NAVIGATION_TIMEOUT_MS)

        images = page.evaluate(JS_IMAGES_NOT_SHOWN)
        n_images = images["count"]
        problems += [f"image not shown: {src}" for src in images["broken"]]

        has_math = 'class="math' in html
        if has_math:
            try:
                page.wait_for_function("() => window.MathJax && window.MathJax.startup && window.MathJax.startup.promise")
                page.evaluate("() => window.MathJax.startup.promise")  # resolves when the first typeset is done
            except Exception:  # noqa: BLE001 -- reported just below, with the nodes left untypeset
                pass
        math = page.evaluate(JS_MATH_STATE)
        if has_math and not math["mathjax"]:
            problems.append(f"the page has math but MathJax did not start within {RENDER_TIMEOUT_MS / 1000:.0f} s")
        problems += [f"math not typeset by MathJax: {text!r}" for text in math["unrendered"]]
        problems += [f"MathJax error: {text!r}" for text in math["errors"]]
        problems += [f"raw TeX left in the text (dollarmath did not parse it?): {text!r}" for text in math["leftovers"]]

        if n_views:
            try:
                page.wait_for_function(JS_ALL_WIDGETS_RENDERED, timeout=RENDER_TIMEOUT_MS)
            except Exception:  # noqa: BLE001 -- a timeout here is reported below, view by view
                pass
            views = page.evaluate(JS_WIDGET_VIEWS)
            problems += [f"saved widget view not rendered: model {v['modelId']}" for v in views if not v["rendered"]]
            if len(views) != n_views:
                problems.append(f"{n_views} widget views in the HTML but {len(views)} in the page")

        # Let late requests (fonts MathJax or the widgets asked for) finish before judging the network.
        page.wait_for_load_state("networkidle", timeout=NAVIGATION_TIMEOUT_MS)
    except Exception as exc:  # noqa: BLE001 -- report the browser's error as a problem of this page
        problems.append(f"browser error: {type(exc).__name__}: {exc}")
    finally:
        context.close()

    problems += [f"request to another machine (aborted): {u}" for u in record.outside_requests]
    problems += [f"local resource failed: {r}" for r in record.failed_responses]
    problems += [f"request failed: {r}" for r in record.failed_requests]
    problems += [f"console error: {m}" for m in record.console_errors if not allowed_console_message(m)]
    problems += [f"page error: {m}" for m in record.page_errors if not allowed_console_message(m)]

    page_stats.append(
        (page_path, n_images, math.get("typeset", 0), math.get("nodes", 0), sum(v["rendered"] for v in views), n_views)
    )
    if problems:
        pytest.fail(f"{page_path}: {len(problems)} problem(s)\n  - " + "\n  - ".join(problems), pytrace=False)

