#!/usr/bin/env bash
# Make sure Debian's Chromium is at /usr/bin/chromium for the browser check (tests/site).
#
# Playwright drives the system browser (executable_path=/usr/bin/chromium); `playwright install` is never used,
# since it downloads a browser from outside the package registries. If Chromium is missing and we are root on a
# Debian-like system, install the `chromium` package with apt-get. Otherwise say so and carry on: the site check
# then skips loudly, or fails when CI=true (tests/site/conftest.py).
set -uo pipefail

CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "ensure_chromium: $CHROMIUM is missing; installing Debian's chromium package with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q && apt-get install -y -q --no-install-recommends chromium
fi
if [ -x "$CHROMIUM" ]; then
    echo "ensure_chromium: installed $("$CHROMIUM" --version 2>/dev/null)"
else
    echo "!!!!!!!!!! ensure_chromium: $CHROMIUM is still missing (not root, no apt-get, or the install failed)."
    echo "!!!!!!!!!! The browser check will be skipped, or will FAIL under CI=true."
fi
exit 0
