#!/usr/bin/env bash
# Benchmarks memoctopus against nginx and the bare mock upstream with oha, side by side.
# Installs what it lacks (oha via cargo, nginx-light via apt), builds the release binaries,
# then hands its arguments to benches/run.py (--runs 3 for the median of three; --help).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v oha >/dev/null || cargo install oha --locked
command -v nginx >/dev/null || { apt-get update -qq && apt-get install -y -qq nginx-light; }
command -v taskset >/dev/null || { apt-get update -qq && apt-get install -y -qq util-linux; }
cargo build --release --bin memoctopus --example mock-upstream --example stream-quality
exec python3 benches/run.py "$@"
