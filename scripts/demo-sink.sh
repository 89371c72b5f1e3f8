#!/usr/bin/env bash
# A local TLS listener that plays Sekoia's intake for a try-out without a Sekoia account:
# prints every line the forwarder delivers (octet-counted: "LEN <PRI>1 TIMESTAMP ..."). Its
# self-signed certificate goes to ./run-example/sink/; the forwarder trusts it with
# --ca-file (README, "Try it"). Needs openssl and socat (apt-get install openssl socat).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=run-example/sink
port=${1:-10514}
mkdir -p "$dir"
if [ ! -f "$dir/sink.key" ]; then
  # CA:FALSE: the certificate is both the trusted root and the server's (rustls refuses a
  # CA certificate used as a server's).
  openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost -addext basicConstraints=critical,CA:FALSE \
    -keyout "$dir/sink.key" -out "$dir/sink.crt" 2>/dev/null
fi
echo "listening on localhost:$port (TLS); lines appear below as they arrive" >&2
exec socat -u "OPENSSL-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork,cert=$dir/sink.crt,key=$dir/sink.key,verify=0" STDOUT
