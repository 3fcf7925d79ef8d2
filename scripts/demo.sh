#!/usr/bin/env bash
# Runs tqsup in dev mode on the demo app (config/demo/): installs php-fpm if
# missing (as root; otherwise prints the install command), builds tqsup and
# serves http://127.0.0.1:8000/ until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
cargo build --release --locked
echo "tqsup demo: open http://127.0.0.1:8000/  (FastCGI for web servers on 127.0.0.1:9001; Ctrl-C stops)" >&2
exec target/release/tqsup run --dev -c config/dev.yaml
