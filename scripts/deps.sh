#!/usr/bin/env bash
# Installs what the tests and the demo need and this machine lacks:
# redis-server (real Redis for every store test), gcc (cgo, for Ory Hydra's
# SQLite), nginx (a real front proxy in the end-to-end tests) and chromium
# (a real browser for test/browser).
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing: ${missing[*]}"
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
# Quiet unless it fails: then apt's own output says why.
if ! out=$($sudo apt-get update -qq 2>&1 && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" 2>&1); then
	echo "$out" >&2
	exit 1
fi
