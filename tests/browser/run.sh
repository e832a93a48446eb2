#!/usr/bin/env bash
# Runs the browser tests of tide serve's web page: tests/browser/run.sh [path/to/tide]
# (default: $TIDE_BINARY, else build/tide), in chromium, then in Firefox when it is installed ($FIREFOX, default
# /usr/bin/firefox-esr; without it a note says Firefox was not tested). Exits 77 (CTest: skipped) with the
# reason when what they need is missing: node, chromium (or $CHROMIUM), or tests/browser/node_modules
# (`npm ci` in tests/browser).
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tide="${1:-${TIDE_BINARY:-$here/../../build/tide}}"
chromium="${CHROMIUM:-/usr/bin/chromium}"

skip() {
  echo "SKIPPED: browser tests of the web page: $1"
  exit 77
}
command -v node >/dev/null || skip "node is not installed (apt-get install nodejs npm)"
[ -x "$chromium" ] || skip "no chromium at $chromium (apt-get install chromium, or set CHROMIUM)"
[ -d "$here/node_modules/puppeteer-core" ] || skip "$here/node_modules is missing (run: npm ci --prefix $here)"
[ -x "$tide" ] || { echo "FAILED: no tide binary at $tide"; exit 1; }

export TIDE_BINARY="$(cd "$(dirname "$tide")" && pwd)/$(basename "$tide")" CHROMIUM="$chromium"
if [ -n "${TIDE_WEB_PAGE_OVERRIDE:-}" ]; then  # relative to where run.sh was started, not to tests/browser
  TIDE_WEB_PAGE_OVERRIDE="$(cd "$(dirname "$TIDE_WEB_PAGE_OVERRIDE")" && pwd)/$(basename "$TIDE_WEB_PAGE_OVERRIDE")"
  echo "note: / is answered with $TIDE_WEB_PAGE_OVERRIDE, not with the page compiled into $TIDE_BINARY"
fi
# In-process (not `node --test`, which runs it in a child): a timeout's SIGTERM reaches the test, which stops
# its server and browser. Both runs before CTest's own 600 s limit.
cd "$here" || exit 1
echo "== chromium"
TIDE_BROWSER=chromium timeout --kill-after=10 280 node --test-reporter=spec web_page.test.mjs || exit 1
firefox="${FIREFOX:-/usr/bin/firefox-esr}"
if [ ! -x "$firefox" ]; then
  echo "note: Firefox was not tested: no $firefox (apt-get install firefox-esr, or set FIREFOX)"
  exit 0
fi
echo "== firefox"
TIDE_BROWSER=firefox FIREFOX="$firefox" TIDE_SCREENSHOT_DIR="$(dirname "$TIDE_BINARY")/browser-screenshots/firefox" \
  exec timeout --kill-after=10 280 node --test-reporter=spec web_page.test.mjs
