#!/usr/bin/env bash
# Installs what the tests and the demo need and this machine lacks:
# redis-server (real Redis for every store test), gcc (cgo, for Ory Hydra's
# SQLite) and nginx (a real front proxy in the end-to-end tests).
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
