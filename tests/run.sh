#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need, then runs the format
# check, clippy with warnings as errors, and every unit and integration test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests need, installed only when missing.
need_pkgs=()
if [ ${#need_pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}"
fi

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
cargo test
