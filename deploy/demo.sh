#!/usr/bin/env bash
# Set up a fresh Linux machine and run ringway's built-in demo (loopback only, no etcd):
# installs the build prerequisites that are missing (protoc for etcd-client's build script,
# a C compiler for mimalloc and aws-lc; Rust through rustup when cargo is absent), then builds and runs.
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v protoc >/dev/null 2>&1 || need_pkgs+=(protobuf-compiler)
command -v cc >/dev/null 2>&1 || need_pkgs+=(build-essential)
command -v curl >/dev/null 2>&1 || command -v cargo >/dev/null 2>&1 || need_pkgs+=(curl ca-certificates)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    else
        curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
fi
exec cargo run --release -- "$@"
