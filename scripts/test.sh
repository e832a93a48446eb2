#!/usr/bin/env bash
# Builds tide with its tests and runs the whole suite, then the parsers' sanitizer build (scripts/fuzz.sh).
# Parity tests need TIDE_FIXTURES (the reference fixtures folder); without it they are reported as skipped, and
# this script says why.
set -euo pipefail
cd "$(dirname "$0")/.."
TIDE_SETUP_TARGET=all scripts/setup.sh
tests/browser/setup.sh  # chromium, node and puppeteer-core for the web page's tests, when it can (else skipped)
if [ -z "${TIDE_FIXTURES:-}" ]; then
  echo "note: TIDE_FIXTURES is not set: the parity tests will be reported as skipped"
elif [ ! -d "$TIDE_FIXTURES" ]; then
  echo "note: TIDE_FIXTURES names $TIDE_FIXTURES, which is not a folder: the parity tests will be reported as skipped"
fi
ctest --test-dir build --output-on-failure -j "$(nproc)" --timeout 1500
scripts/fuzz.sh  # the parsers under ASan + UBSan: their unit tests and every fuzz target under libFuzzer
