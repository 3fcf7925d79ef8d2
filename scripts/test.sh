#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need (as root;
# otherwise prints the install command), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --tests
exec cargo test --locked --all-targets -- --test-threads="${TQSUP_TEST_THREADS:-2}"
