#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need, then runs the format
# check, clippy with warnings as errors, every unit and integration test, and the quick mesh lab
# (bench/mesh/run --quick: four hosts in network namespaces; needs root or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi

# Debian packages the tests need, installed only when missing.
need_pkgs=()
command -v etcd >/dev/null 2>&1 || need_pkgs+=(etcd-server)          # the etcd integration tests
command -v protoc >/dev/null 2>&1 || need_pkgs+=(protobuf-compiler)  # etcd-client's build script
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)            # test certificates (listener and etcd TLS), s_client
command -v nix-instantiate >/dev/null 2>&1 || need_pkgs+=(nix-bin)   # checks that flake.nix parses
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)         # renders the status page
command -v curl >/dev/null 2>&1 || need_pkgs+=(curl)                 # an HTTPS client in the TLS tests
command -v python3 >/dev/null 2>&1 || need_pkgs+=(python3)           # the TLS tests' client script
command -v nft >/dev/null 2>&1 || need_pkgs+=(nftables)              # the mesh lab's partitions
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)               # the mesh lab's namespaces
if [ ${#need_pkgs[@]} -gt 0 ]; then
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}"
fi

cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
log="$(mktemp)"
lab_out="$(mktemp -d)"
trap 'rm -f "$log"; $SUDO rm -rf "$lab_out"' EXIT
cargo test --all-targets 2>&1 | tee "$log"
# The quick mesh lab on the debug binary cargo test just built (a release build would cost more
# than the lab itself). Its report goes to a temporary dir: the recorded results in
# bench/results/mesh/ come from full runs. A scenario short of its figure, or a machine that
# lacks what the lab needs (root, ip, nft, etcd), fails the suite with the reason.
bin="${CARGO_TARGET_DIR:-$PWD/target}/debug/ringway"
lab_status=0
$SUDO env RINGWAY_BIN="$bin" bench/mesh/run --quick --out "$lab_out" 2>&1 | tee -a "$log" ||
    lab_status=$?
if ! grep -q "mesh lab scenarios" "$log"; then
    echo "test result: FAILED. 0 passed; 1 failed (the mesh lab did not run: see above)" | tee -a "$log"
fi
# One closing line for the whole run: unit tests, the integration test binary, the mesh lab.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed/) p += $(i-1); if ($i ~ /^failed/) f += $(i-1) } }
     END { printf "tests: %d passed, %d failed\n", p, f }' "$log"
exit "$lab_status"
