#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need, then runs the format
# check, clippy with warnings as errors, and every unit and integration test.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests need, installed only when missing.
need_pkgs=()
command -v etcd >/dev/null 2>&1 || need_pkgs+=(etcd-server)          # the etcd integration tests
command -v protoc >/dev/null 2>&1 || need_pkgs+=(protobuf-compiler)  # etcd-client's build script
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)            # test certificates (listener and etcd TLS), s_client
command -v nix-instantiate >/dev/null 2>&1 || need_pkgs+=(nix-bin)   # checks that flake.nix parses
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)         # renders the status page
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)                 # an HTTPS client in the TLS tests
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)           # the TLS tests' client script
if [ ${#need_pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}"
fi

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
cargo test --all-targets 2>&1 | tee "$log"
# One closing line for the whole run: unit tests plus the integration test binary.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
