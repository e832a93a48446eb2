#!/usr/bin/env bash
# Installs what the browser tests need, where it can: Debian's chromium, firefox-esr, nodejs and npm (as root, with apt),
# then puppeteer-core into tests/browser/node_modules (`npm ci`, from package-lock.json). Never fails: offline
# or without root it says what is missing, and tests/browser/run.sh then reports the test as skipped.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

# By command, not by package: node may come from elsewhere (e.g. NodeSource's nodejs, which has npm in it).
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x "${FIREFOX:-/usr/bin/firefox-esr}" ] || missing+=(firefox-esr)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } ||
      echo "note: could not install ${missing[*]} (offline?): the browser tests will be skipped"
  else
    echo "note: ${missing[*]} not installed (needs root and apt): the browser tests will be skipped"
  fi
fi
if command -v npm >/dev/null && [ ! -d "$here/node_modules/puppeteer-core" ]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error) ||
    echo "note: npm ci in tests/browser failed (offline?): the browser tests will be skipped"
fi
exit 0
