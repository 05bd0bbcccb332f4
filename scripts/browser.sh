#!/usr/bin/env bash
# Finds a Chromium for the explain page's browser test (tests/integration/test_ui.py), or installs
# Debian's `chromium` package when running as root with apt-get. Prints the browser's path; exits 1
# (saying why on stderr) when none can be had. Playwright drives this system browser: it never
# downloads one of its own.
set -uo pipefail
find_browser() {
    for name in "${TIMELINE_BROWSER:-}" chromium chromium-browser google-chrome-stable google-chrome; do
        [ -n "$name" ] && command -v "$name" >/dev/null 2>&1 && { command -v "$name"; return 0; }
    done
    return 1
}
if find_browser; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's chromium package for the browser test ..." >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >&2 || true
    if find_browser; then exit 0; fi
fi
echo "no Chromium found (looked for chromium, chromium-browser, google-chrome; TIMELINE_BROWSER names another)" \
     "and it could not be installed (needs root and apt-get)" >&2
exit 1
