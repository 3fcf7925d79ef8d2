#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need (as root;
# otherwise prints the install command), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --tests
threads="${TQSUP_TEST_THREADS:-2}"
cargo test --locked --all-targets -- --test-threads="$threads"
# Every test that runs a forwarder once more with two forwarder threads
# (forward.threads is auto in the tests: one thread on up to 2 CPUs), load
# tests included; only config, docs and package (no forwarder) run once.
TQSUP_FORWARD_THREADS=2 cargo test --locked \
  --test forward_conformance --test forward_hardening --test forward_nginx \
  --test webservers --test e2e --test load --test observability \
  --test supervisor --test dev -- --test-threads="$threads"
