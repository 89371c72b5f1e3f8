#!/usr/bin/env bash
# Runs inside a fresh debian:bookworm-slim container (host network, for apt) with /pkg holding old.deb and new.deb
# (same files, an older version number): install, check as the service user exactly as the
# unit runs it, an invalid configuration refused by the unit's ExecStartPre, an upgrade that
# keeps the administrator's intake file, purge. Prints "step: ..." lines, the last one
# "package test: ok"; any failure exits non-zero (set -e) after saying which step.
set -euo pipefail
step() { echo "step: $*"; }
conf=/etc/sekoia-forwarder/intakes.yaml
user=sekoia-forwarder

step "install the older version (apt fetches its dependencies from deb.debian.org)"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /pkg/old.deb
unit=$(dpkg -L sekoia-forwarder | grep '/systemd/system/sekoia-forwarder.service$')
getent passwd "$user" | grep -q ':/nonexistent:/usr/sbin/nologin$'
test -x /usr/bin/sekoia-forwarder && test -x /usr/bin/sekoia-ctl && test -f "$unit"
test "$(stat -c '%U:%G %a' "$conf")" = "root:$user 640"
test "$(stat -c '%U:%G %a' /etc/sekoia-forwarder/certs)" = "root:$user 750"
dpkg-query -W -f='${Conffiles}\n' sekoia-forwarder | grep -q "$conf"
dpkg-query -W -f='${Conffiles}\n' sekoia-forwarder | grep -q /etc/default/sekoia-forwarder

# The service's environment as systemd builds it: Environment= lines, then EnvironmentFile=
# (which wins); the folders StateDirectory= and friends would create, with their modes.
step "check passes as $user with the shipped configuration"
while IFS= read -r line; do export "${line#Environment=}"; done < <(grep '^Environment=' "$unit")
set -a; . /etc/default/sekoia-forwarder; set +a
install -d -m 0700 -o "$user" -g "$user" /var/lib/sekoia-forwarder
install -d -m 0750 -o "$user" -g "$user" /run/sekoia-forwarder /var/log/sekoia-forwarder
pre=$(sed -n 's/^ExecStartPre=//p' "$unit")
(umask 0077 && runuser -u "$user" -- $pre)

step "an invalid configuration stops the unit at ExecStartPre, saying why"
cp "$conf" /tmp/good.yaml
printf 'intakes:\n- name: Broken\n  protocol: tcp\n  port: 70000\n  intake_key: KEY\n' > "$conf"
set +e
out=$(runuser -u "$user" -- $pre 2>&1)
status=$?
set -e
echo "$out"
test "$status" = 3  # configuration rejected (docs/operations.md, "Exit status")
grep -q 70000 <<<"$out"
cp /tmp/good.yaml "$conf"

step "upgrade keeps the administrator's intake file"
echo "# changed by the administrator" >> "$conf"
dpkg -i /pkg/new.deb
grep -q "# changed by the administrator" "$conf"
test "$(stat -c '%U:%G %a' "$conf")" = "root:$user 640"
dpkg-query -W -f='${Version}\n' sekoia-forwarder | grep -vq '^0\.0\.9'

step "purge removes the package's files and state, keeps the user"
echo queued > /var/lib/sekoia-forwarder/leftover
dpkg --purge sekoia-forwarder
for gone in /usr/bin/sekoia-forwarder "$unit" /etc/sekoia-forwarder /etc/default/sekoia-forwarder \
    /var/lib/sekoia-forwarder /var/log/sekoia-forwarder; do
  if [ -e "$gone" ]; then echo "still there after purge: $gone"; exit 1; fi
done
getent passwd "$user" >/dev/null
echo "package test: ok"
