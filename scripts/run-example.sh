#!/usr/bin/env bash
# Runs the forwarder on config/intakes.yaml from a checkout, without root: state, spool and a
# self-signed TLS certificate for the tls intake go to ./run-example/. Events are forwarded to
# REGION (default FRA1); override REGION/ENDPOINT/SEKOIA_CA_FILE as with the reference image.
set -euo pipefail
cd "$(dirname "$0")/.."
state=run-example
mkdir -p "$state/certs" "$state/spool" "$state/shm"
if [ ! -f "$state/certs/server.key" ]; then
  openssl req -x509 -sha256 -days 1825 -nodes -newkey rsa:2048 -subj "/CN=$(hostname)" \
    -keyout "$state/certs/server.key" -out "$state/certs/server.crt" 2>/dev/null
fi
cargo build --release -p sekoia-forwarder
exec target/release/sekoia-forwarder \
  --config config/intakes.yaml \
  --certs-dir "$state/certs" \
  --spool-dir "$state/spool" \
  --shm-dir "$state/shm" \
  --control-socket "$state/control.sock" \
  --stats-file "$state/stats.log" \
  "$@"
