"""Browser check of the built site (`make site-check`, step 4 of `make test`).

Every HTML page of _build/html is opened in Chromium, served from 127.0.0.1, and must:

- load with HTTP 200, and every resource it loads from the local server must answer below 400;
- show every image (`naturalWidth > 0` once loaded);
- have its math typeset by MathJax: each `.math` node Sphinx emitted holds an `mjx-container`, no MathJax error
  node appears, and no `$...$` or `\\(` is left as plain text in the prose (a sign the MyST parser missed it);
- turn every saved ipywidget view (`script[type="application/vnd.jupyter.widget-view+json"]`) into a rendered
  widget, from the widget state stored in the notebook;
- have widgets that respond without a kernel: moving any control of a widget (a slider one step, a dropdown to
  another option) changes what the widget displays below it (its images, HTML or output), at 1280 px. A widget
  made with `ipywidgets.interact` fails this on the static site, where no Python runs (use
  `lessons.viz.precomputed_widget`);
- make no request to another machine: every request is routed, those to 127.0.0.1/localhost and data:/blob:
  pass, all others are aborted and recorded, and the record must be empty;
- log no console error and throw no page error, apart from the short allow-list below;
- show its figures large enough to read: no <img> drawn narrower than MIN_FIGURE_SCALE of its own pixel width
  (pages in SQUEEZED_FIGURE_PAGES are known to fail this, until their notebooks draw smaller figures);
- offer exactly one search entry (a second search row once came back with a theme update);
- have working navigation: the ☰ button hides and shows the site's sidebar, and the page's contents
  ("On this page") are on screen or one click away.

Every page is opened a second time on a 390 px wide phone screen (test_page_on_a_phone), where:

- nothing is wider than the screen unless it scrolls inside its own box within the article (a code cell, an
  output, a claims table): the page itself never scrolls sideways;
- the ☰ button opens the site navigation and the contents button opens the page's contents, each as a panel;
- the result column of every claims table ("paper vs. this book") is on screen;
- there is exactly one search entry.

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

DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

# A figure is readable when the browser draws it at MIN_FIGURE_SCALE of its natural (pixel) width or more, on the
# 1280 px desktop layout (a 688 px wide text column). Matplotlib's 10 pt labels are ~14 px in a PNG saved at
# 100 dpi; below 0.7 of that they shrink under ~10 px. Natural width is what the PNG holds, so a figure passes
# by being drawn at a size that fits the column (figsize), not by a higher dpi.
MIN_FIGURE_SCALE = 0.7
# Pages whose figures are known to be squeezed below MIN_FIGURE_SCALE (measured scale of the worst image in the
# comment). The check passes on these pages, and FAILS once a page listed here no longer needs it, so that the
# entry is removed. Shrink this list as the notebooks' figures are redrawn; never add a page to it to pass.
# Empty since every wide figure was redrawn for the 688 px column (diagrams wrapped or turned vertical, panels in
# grids); a new figure that is too wide fails the check.
SQUEEZED_FIGURE_PAGES: dict[str, str] = {}


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
  const name = img => (img.currentSrc || img.src || img.outerHTML).split('/').pop().slice(0, 80);
  return {count: images.length,
          broken: images.filter(img => !(img.naturalWidth > 0)).map(img => img.currentSrc || img.src || img.outerHTML.slice(0, 120)),
          // drawn width / pixel width of every image shown in the article, for the readability check
          scales: images.filter(img => img.naturalWidth > 0 && img.closest('article') && img.getBoundingClientRect().width > 0)
                        .map(img => ({name: name(img), natural: img.naturalWidth,
                                      drawn: Math.round(img.getBoundingClientRect().width),
                                      scale: img.getBoundingClientRect().width / img.naturalWidth}))};
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
    // Any $ at all: `$$x$$` inside a list item once rendered as "$" + typeset x + "$", and the lone dollars sat in
    // text nodes of their own beside the math, where a $...$ pattern cannot see them. A real dollar sign in
    // prose would also be caught here: write it as code, or rephrase.
    const hit = node.textContent.match(/\$|\\\(|\\\[/);
    if (hit) {
      const context = (node.previousSibling ? node.previousSibling.textContent.slice(-30) : '') + node.textContent +
                      (node.nextSibling ? node.nextSibling.textContent.slice(0, 30) : '');
      leftovers.push(context.replace(/\s+/g, ' ').trim().slice(0, 120));
    }
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


# What widget view `i` displays, apart from its controls: the images shown (by a digest of their data) and the text
# of its HTML and output areas. Compared before and after a control moves.
JS_WIDGET_DISPLAY = """
(i) => {
  const script = document.querySelectorAll('script[type="application/vnd.jupyter.widget-view+json"]')[i];
  const area = script && script.previousElementSibling;
  if (!area) return null;
  const shown = el => { const r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0; };
  const images = [...area.querySelectorAll('img')].filter(shown).map(img => img.src.length + ':' + img.src.slice(-80));
  const texts = [...area.querySelectorAll('.widget-html-content, .jp-OutputArea-output')].filter(shown)
                  .map(el => el.textContent.trim());
  return JSON.stringify({images, texts});
}
"""

JS_SEARCH_ENTRIES = """
() => [...document.querySelectorAll('.search-button, .search-button-field, form.bd-search')].filter(el => {
  const r = el.getBoundingClientRect();
  return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== 'hidden' && r.right > 0 && r.left < innerWidth;
}).map(el => `<${el.tagName.toLowerCase()} class="${el.className}">` + (el.closest('header') ? ' in a <header>' : ''))
"""

# Elements that stick out of the screen sideways. Fine when the box that clips or scrolls them sits inside the
# article and does not hold the whole article (a code cell, an output, a claims table's box); not fine when
# nothing clips them (the page scrolls sideways) or when the article itself scrolls. Reports outermost offenders.
JS_TOO_WIDE = """
() => {
  const vw = document.documentElement.clientWidth;
  const article = document.querySelector('article') || document.body;
  const scroller = el => {
    for (let a = el.parentElement; a && a !== document.documentElement; a = a.parentElement)
      if (getComputedStyle(a).overflowX !== 'visible') return a;
    return null;
  };
  const offenders = new Set(), found = [];
  for (const el of document.querySelectorAll('body *')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.height === 0 || (r.right <= vw + 1 && r.left >= -1)) continue;
    const style = getComputedStyle(el);
    if (style.position === 'fixed' || style.visibility === 'hidden') continue;  // closed off-canvas sidebars
    const box = scroller(el);
    if (box && article.contains(box) && box !== article) continue;
    offenders.add(el);
    if (offenders.has(el.parentElement)) continue;
    const text = (el.textContent || '').replace(/\\s+/g, ' ').trim().slice(0, 60);
    found.push(`<${el.tagName.toLowerCase()} class="${el.getAttribute('class') || ''}"> spans ${Math.round(r.left)}..${Math.round(r.right)} px` +
               ` (${box ? 'clipped by the page layout' : 'nothing scrolls it'}): ${JSON.stringify(text)}`);
  }
  return {pageWidth: document.documentElement.scrollWidth, viewport: vw, offenders: found.slice(0, 10)};
}
"""

# book/_static/site.css pins the result column (pass / discrepancy / FAIL) of every claims table to the right edge
# of the table's scrolling box: on a phone it must be on screen without scrolling. Returns the tables where not.
JS_CLAIMS_RESULT_HIDDEN = """
() => [...document.querySelectorAll('table.claims-table')].flatMap((table, i) => {
  const cell = table.querySelector('tbody tr td:last-child');
  if (!cell) return [];
  const r = cell.getBoundingClientRect();
  return (r.left >= 0 && r.right <= document.documentElement.clientWidth + 1) ? [] :
         [`table ${i + 1}: ${JSON.stringify(cell.textContent)} drawn at ${Math.round(r.left)}..${Math.round(r.right)} px`];
})
"""

JS_PANEL_STATE = """
() => {
  const shown = el => { if (!el) return false; const r = el.getBoundingClientRect();
                        return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== 'hidden'; };
  const links = el => el ? [...el.querySelectorAll('a[href]')].filter(shown).length : 0;
  const primary = document.getElementById('pst-primary-sidebar');
  const primaryModal = document.getElementById('pst-primary-sidebar-modal');
  const secondary = document.getElementById('pst-secondary-sidebar');
  const secondaryModal = document.getElementById('pst-secondary-sidebar-modal');
  return {
    sidebarLinks: links(primary), sidebarModalOpen: !!(primaryModal && primaryModal.open), sidebarModalLinks: links(primaryModal),
    // The page's contents exist when its "On this page" holds links, shown or not.
    hasContents: !!(secondary && secondary.querySelector('a[href]')) || !!(secondaryModal && secondaryModal.querySelector('a[href]')),
    contentsLinks: links(secondary), contentsModalOpen: !!(secondaryModal && secondaryModal.open), contentsModalLinks: links(secondaryModal),
  };
}
"""


def widget_control_problems(page) -> tuple[list[str], int]:
    """Move every control of every rendered widget view once; each move must change what the view displays.

    Sliders are moved one step with the keyboard (right, or left at the maximum), dropdowns to their next option.
    Returns the problems and the number of controls tried.
    """
    problems: list[str] = []
    tried = 0
    views = page.locator('script[type="application/vnd.jupyter.widget-view+json"]')
    for i in range(views.count()):
        area = views.nth(i).locator("xpath=preceding-sibling::*[1]")
        controls = [("slider", h) for h in area.locator(".noUi-handle").all()]
        controls += [("dropdown", d) for d in area.locator("select").all()]
        for kind, control in controls:
            label = control.evaluate(
                "el => { const w = el.closest('.widget-inline-hbox, .jupyter-widgets');"
                " const l = w && w.querySelector('.widget-label'); return l ? l.textContent.trim() : ''; }"
            )
            name = f"widget {i + 1}, {kind} {label!r}"
            before = page.evaluate(JS_WIDGET_DISPLAY, i)
            if before is None:
                problems.append(f"{name}: the widget is not rendered")
                continue
            tried += 1
            control.scroll_into_view_if_needed()
            if kind == "slider":
                at_max = control.get_attribute("aria-valuenow") == control.get_attribute("aria-valuemax")
                control.focus()
                page.keyboard.press("ArrowLeft" if at_max else "ArrowRight")
            else:
                options = control.locator("option").all()
                current = control.evaluate("el => el.selectedIndex")
                if len(options) < 2:
                    continue
                control.select_option(index=(current + 1) % len(options))
            try:
                page.wait_for_function(f"() => ({JS_WIDGET_DISPLAY})({i}) !== {before!r}", timeout=3_000)
            except Exception:  # noqa: BLE001 -- a timeout: the display did not change
                problems.append(f"{name}: moving it changes nothing the widget displays (it needs a kernel? use "
                                "lessons.viz.precomputed_widget)")
    return problems, tried


def meta_refresh_target(html: str) -> str | None:
    """The URL of a `<meta http-equiv="refresh" content="0; url=...">` redirect page (the site's index.html)."""
    match = re.search(r'<meta[^>]+http-equiv="refresh"[^>]+content="\s*\d+\s*;\s*url=([^"]+)"', html, re.I)
    return match.group(1).strip() if match else None


def wait_for_math(page, html: str) -> None:
    """Wait until MathJax has typeset the page (it changes the layout), if the page has math; errors reported later."""
    if 'class="math' not in html:
        return
    try:
        page.wait_for_function("() => window.MathJax && window.MathJax.startup && window.MathJax.startup.promise")
        page.evaluate("() => window.MathJax.startup.promise")  # resolves when the first typeset is done
    except Exception:  # noqa: BLE001 -- the callers report what is left untypeset
        pass


def search_problems(page) -> list[str]:
    entries = page.evaluate(JS_SEARCH_ENTRIES)
    if len(entries) != 1:
        return [f"{len(entries)} search entries on screen, expected exactly one: {entries}"]
    return []


def click_and_wait(page, button, condition: str) -> bool:
    """Click a visible button; True if the page state `condition` (JS expression over JS_PANEL_STATE) follows."""
    button.click()
    try:
        page.wait_for_function(f"() => {{ const s = ({JS_PANEL_STATE})(); return {condition}; }}", timeout=3_000)
        return True
    except Exception:  # noqa: BLE001 -- a timeout means the button did nothing (reported by the caller)
        return False


def navigation_problems(page, width: int) -> list[str]:
    """The ☰ button and the contents button must do their job at this width (their panels are checked, not the DOM)."""
    problems: list[str] = []
    state = page.evaluate(JS_PANEL_STATE)
    where = f"at {width} px"

    toggles = page.locator(".primary-toggle:visible")
    if toggles.count() != 1:
        problems.append(f"{toggles.count()} visible site-navigation (☰) buttons {where}, expected one")
    elif state["sidebarLinks"]:  # a wide screen shows the sidebar: the button must hide it, and show it again
        if not click_and_wait(page, toggles.first, "s.sidebarLinks === 0 || s.sidebarModalOpen"):
            problems.append(f"the ☰ button does nothing {where}: the sidebar stays on screen")
        elif page.evaluate(JS_PANEL_STATE)["sidebarModalOpen"]:
            page.keyboard.press("Escape")
        elif not click_and_wait(page, toggles.first, "s.sidebarLinks > 0"):
            problems.append(f"the ☰ button hid the sidebar {where} but a second click did not bring it back")
    elif not click_and_wait(page, toggles.first, "s.sidebarModalOpen && s.sidebarModalLinks > 0"):
        problems.append(f"the ☰ button does nothing {where}: no navigation panel opens")
    else:
        page.keyboard.press("Escape")
        try:
            page.wait_for_function("() => !document.getElementById('pst-primary-sidebar-modal').open", timeout=3_000)
        except Exception:  # noqa: BLE001 -- a timeout: the panel stayed open
            problems.append(f"the navigation panel does not close with Escape {where}")

    if state["hasContents"] and not state["contentsLinks"]:  # contents not on screen: one click must show them
        toggles = page.locator(".secondary-toggle:visible")
        if toggles.count() != 1:
            problems.append(f"the page's contents are not on screen {where} and there are {toggles.count()} visible contents buttons")
        elif not click_and_wait(page, toggles.first, "s.contentsModalOpen && s.contentsModalLinks > 0"):
            problems.append(f"the contents button does nothing {where}: no 'On this page' panel opens")
        else:
            page.keyboard.press("Escape")
    return problems


def figure_problems(page_path: str, scales: list[dict]) -> tuple[list[str], int]:
    """Figures drawn below MIN_FIGURE_SCALE of their pixel width; a page on SQUEEZED_FIGURE_PAGES may have them."""
    squeezed = [i for i in scales if i["scale"] < MIN_FIGURE_SCALE]
    if page_path in SQUEEZED_FIGURE_PAGES:
        if not squeezed:
            return [f"every figure is readable now: remove {page_path!r} from SQUEEZED_FIGURE_PAGES in {Path(__file__).name}"], 0
        return [], len(squeezed)
    return [
        f"figure too small to read: {i['name']} is {i['natural']} px wide but drawn at {i['drawn']} px "
        f"(scale {i['scale']:.2f} < {MIN_FIGURE_SCALE}); draw it smaller (matplotlib figsize) so its text keeps its size"
        for i in squeezed
    ], len(squeezed)


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
def test_page(page_path: str, site_dir: Path, base_url: str, browser, page_stats) -> None:
    html = (site_dir / page_path).read_text(encoding="utf-8")
    url = f"{base_url}/{page_path}"
    record = PageRecord()
    problems: list[str] = []
    math: dict = {}
    views: list[dict] = []
    n_views = html.count('type="application/vnd.jupyter.widget-view+json"')
    n_images = 0
    n_controls = 0

    squeezed = 0
    context = browser.new_context(viewport=DESKTOP)

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
        figures, squeezed = figure_problems(page_path, images["scales"])
        problems += figures

        has_math = 'class="math' in html
        wait_for_math(page, html)
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
            moved, n_controls = widget_control_problems(page)
            problems += moved

        # Let late requests (fonts MathJax or the widgets asked for) finish before judging the network.
        page.wait_for_load_state("networkidle", timeout=NAVIGATION_TIMEOUT_MS)

        problems += search_problems(page)
        problems += navigation_problems(page, DESKTOP["width"])
    except Exception as exc:  # noqa: BLE001 -- report the browser's error as a problem of this page
        problems.append(f"browser error: {type(exc).__name__}: {exc}")
    finally:
        context.close()

    problems += [f"request to another machine (aborted): {u}" for u in record.outside_requests]
    problems += [f"local resource failed: {r}" for r in record.failed_responses]
    problems += [f"request failed: {r}" for r in record.failed_requests]
    problems += [f"console error: {m}" for m in record.console_errors if not allowed_console_message(m)]
    problems += [f"page error: {m}" for m in record.page_errors if not allowed_console_message(m)]

    page_stats(
        (page_path, n_images, squeezed, math.get("typeset", 0), math.get("nodes", 0), sum(v["rendered"] for v in views), n_views,
         n_controls)
    )
    if problems:
        pytest.fail(f"{page_path}: {len(problems)} problem(s)\n  - " + "\n  - ".join(problems), pytrace=False)



@pytest.mark.parametrize("page_path", built_pages() or ["(site not built)"])
def test_page_on_a_phone(page_path: str, site_dir: Path, base_url: str, browser) -> None:
    """The same page on a 390 px wide phone: nothing pushes the page sideways, navigation and contents open, one search."""
    html = (site_dir / page_path).read_text(encoding="utf-8")
    url = f"{base_url}/{page_path}"
    problems: list[str] = []
    page_errors: list[str] = []
    context = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
    context.route("**/*", lambda route: route.continue_() if is_local(route.request.url) else route.abort())
    page = context.new_page()
    page.set_default_timeout(RENDER_TIMEOUT_MS)
    page.on("pageerror", lambda exc: page_errors.append(str(exc)))
    try:
        page.goto(url, wait_until="load", timeout=NAVIGATION_TIMEOUT_MS)
        target = meta_refresh_target(html)
        if target is not None:
            page.wait_for_url(urljoin(url, target), wait_until="load", timeout=NAVIGATION_TIMEOUT_MS)
            html = (site_dir / urlparse(page.url).path.lstrip("/")).read_text(encoding="utf-8")
        wait_for_math(page, html)
        if 'type="application/vnd.jupyter.widget-view+json"' in html:
            try:
                page.wait_for_function(JS_ALL_WIDGETS_RENDERED, timeout=RENDER_TIMEOUT_MS)
            except Exception:  # noqa: BLE001 -- test_page reports widgets that do not render
                pass
        wide = page.evaluate(JS_TOO_WIDE)
        if wide["pageWidth"] > wide["viewport"] + 1:
            problems.append(f"the page scrolls sideways on a {PHONE['width']} px screen: it is {wide['pageWidth']} px wide")
        problems += [f"wider than the screen: {o}" for o in wide["offenders"]]
        problems += [f"claims table: the result column is off screen ({where})" for where in page.evaluate(JS_CLAIMS_RESULT_HIDDEN)]
        problems += search_problems(page)
        problems += navigation_problems(page, PHONE["width"])
    except Exception as exc:  # noqa: BLE001 -- report the browser's error as a problem of this page
        problems.append(f"browser error: {type(exc).__name__}: {exc}")
    finally:
        context.close()
    problems += [f"page error: {m}" for m in page_errors if not allowed_console_message(m)]
    if problems:
        pytest.fail(f"{page_path} at {PHONE['width']} px: {len(problems)} problem(s)\n  - " + "\n  - ".join(problems), pytrace=False)
