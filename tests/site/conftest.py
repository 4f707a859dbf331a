"""Fixtures for the browser check of the built site: a local HTTP server and Debian's Chromium via Playwright.

The browser is the system's /usr/bin/chromium (`make test` installs Debian's package when it can). Playwright's
own browser download (`playwright install`) is never used: it fetches from outside the package registries.
Without Chromium the check skips loudly on a workstation and fails under CI=true, so CI can never pass by
skipping it.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "_build" / "html"
CHROMIUM = Path("/usr/bin/chromium")
# Per page: (path, images, images too small to read, math typeset, math nodes, widgets rendered, widget views saved,
# widget controls moved);
# printed at the end.
PAGE_STATS = "page_stats"

# Flags for a quiet, offline, headless Chromium in a container (we run as root, hence --no-sandbox).
# The --disable-* flags stop Chromium's own calls home (updates, sync, field trials) so that the only
# requests the browser makes are the page's.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-dev-shm-usage",  # /dev/shm is small in containers; Chromium then crashes on big pages
]


def running_under_ci() -> bool:
    """CI=true (any CI system sets it) makes a missing browser an error instead of a skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serve files without logging every request to stderr."""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (signature of the base class)
        pass


@pytest.fixture(scope="session")
def site_dir() -> Path:
    if not (SITE / "index.html").is_file():
        pytest.fail(f"{SITE.relative_to(ROOT)}/index.html does not exist: run `make book` first", pytrace=False)
    return SITE


@pytest.fixture(scope="session")
def base_url(site_dir: Path) -> Iterator[str]:
    """Serve the built site on 127.0.0.1 at a free port, from a background thread, for the whole session."""
    handler = functools.partial(QuietHandler, directory=str(site_dir))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="site-server", daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        message = (
            f"!!! BROWSER CHECK NOT RUN: {CHROMIUM} is missing. Install Debian's `chromium` package "
            "(`make test` does this with apt-get when run as root)."
        )
        if running_under_ci():
            pytest.fail(message + " CI=true, so this is a failure.", pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def page_stats(record_property):
    """Where a page test notes what it checked, for the summary printed at the end. The note rides on the test's
    report (a user property), so it reaches the summary from pytest-xdist's worker processes too."""
    return lambda stats: record_property(PAGE_STATS, tuple(stats))


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """Print what each page held (so "passed" visibly covered math and widgets); repeat a skip loudly."""
    stats = [
        value
        for outcome in ("passed", "failed")
        for report in terminalreporter.stats.get(outcome, [])
        if getattr(report, "when", None) == "call"
        for name, value in getattr(report, "user_properties", [])
        if name == PAGE_STATS
    ]
    if stats:
        terminalreporter.write_sep("-", "pages checked in the browser")
        terminalreporter.write_line(
            f"{'page':<40} {'images':>6} {'too small':>9} {'math typeset':>13} {'widgets rendered':>17}"
            f" {'controls moved':>14}"
        )
        for path, images, squeezed, typeset, nodes, rendered, saved, controls in sorted(stats):
            terminalreporter.write_line(
                f"{path:<40} {images:>6} {squeezed:>9} {typeset:>6}/{nodes:<6} {rendered:>8}/{saved:<8} {controls:>14}"
            )
    skipped = terminalreporter.stats.get("skipped", [])
    if skipped and not CHROMIUM.exists():
        terminalreporter.write_sep("!", f"BROWSER CHECK SKIPPED: {CHROMIUM} is missing", red=True, bold=True)
