#!/usr/bin/env bash
# Builds tide and runs the whole test suite. Parity tests need TIDE_FIXTURES (the reference
# fixtures folder); without it they are reported as skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
ctest --test-dir build --output-on-failure -j "$(nproc)" --timeout 1500
