#!/bin/sh
# Runs mdatagen (pinned in this folder's go.mod) on the receiver's
# metadata.yaml. mdatagen names the package of the test files it writes
# after the folder that holds metadata.yaml, so it is given the module root
# through a link named xdpflowreceiver, whatever the checkout is called.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ln -s "$root" "$tmp/xdpflowreceiver"
cd "$root/internal/tools"
go tool mdatagen "$tmp/xdpflowreceiver/metadata.yaml"
