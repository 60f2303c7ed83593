#!/usr/bin/env bash
# The router app's process for mta.yaml (MTA modules have no sidecars):
# extauthz on loopback, Envoy on $PORT in front of it. If either exits, the
# instance exits and Cloud Foundry restarts it.
set -u
./extauthz &
./envoy -c envoy.yaml --log-level warn &
wait -n
exit 1
