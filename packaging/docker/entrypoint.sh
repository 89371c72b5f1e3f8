#!/bin/sh
# Container entrypoint. Started as root, it only hands what the reference image's users mount
# to the sekoia-forwarder user, then runs the command as that user, with no capability but
# CAP_NET_BIND_SERVICE and no way to gain privileges. Started as another user (`user:` in
# compose), it runs the command as is: the mounts must then already be that user's.
set -eu
user=sekoia-forwarder
[ "$(id -u)" = 0 ] || exec "$@"
uid=$(id -u "$user")

# The spool folder (/var/spool/rsyslog): a bind mount Docker just created for root, or the
# reference image's queue folder. It is given to the user once, with what it holds; until
# then only root could write in it, so nothing in it was planted by the user.
spool=${SPOOL_DIR:-/var/spool/rsyslog}
mkdir -p "$spool"
if [ "$(stat -c %u "$spool")" != "$uid" ]; then
  echo "entrypoint: giving $spool to $user (uid $uid)" >&2
  chown -R "$user:" "$spool"
  chmod 0700 "$spool"
fi

# TLS intake keys: the reference keeps /certs/server.key root's and 0600. The forwarder reads
# a private copy, so the host's files keep their owner and mode (restart to pick up new ones).
certs=${CERTS_DIR:-/certs}
if [ -d "$certs" ]; then
  private=/run/sekoia-forwarder/certs
  rm -rf "$private"
  install -d -m 0700 -o "$user" -g "$user" "$private"
  cp -RL "$certs"/. "$private"/
  chown -R "$user:" "$private"
  chmod -R go-rwx "$private"
  case "${SEKOIA_CA_FILE:-}" in
    "$certs"/*) SEKOIA_CA_FILE="$private/${SEKOIA_CA_FILE#"$certs"/}"; export SEKOIA_CA_FILE ;;
  esac
  CERTS_DIR=$private
  export CERTS_DIR
fi

exec setpriv --reuid="$user" --regid="$user" --init-groups --no-new-privs \
  --inh-caps=-all,+net_bind_service --ambient-caps=-all,+net_bind_service \
  --bounding-set=-all,+net_bind_service -- "$@"
