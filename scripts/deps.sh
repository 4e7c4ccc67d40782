#!/usr/bin/env bash
# Installs the Debian packages celine needs to build (and, with --test, to test).
# Safe to run twice: installs only what is missing. Needs root (or sudo).
set -euo pipefail
pkgs=(build-essential cmake pkg-config libuv1-dev libjansson-dev libcurl4-openssl-dev libpcre2-dev
      libzstd-dev libhttp-parser-dev zstd)
if [ "${1:-}" = "--test" ]; then
  pkgs+=(libcmocka-dev clang libclang-rt-14-dev python3 python3-numpy wrk curl ca-certificates)
  # Node.js + npm may come from elsewhere than Debian (these machines ship their own, which
  # Debian's npm package conflicts with): install Debian's only when no npm is on PATH.
  command -v npm >/dev/null 2>&1 || pkgs+=(nodejs npm)
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "celine: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
