#!/usr/bin/env bash
# The container image's HEALTHCHECK: GET /healthz over the loopback and exit 0 on a 200. Uses
# bash's /dev/tcp, so the image needs no curl or wget.
#
#   healthcheck.sh [HOST:PORT]
#
# Without an argument, the address is server.listen as `sashad config check` reports it, so a
# port changed with SASHAD__SERVER__LISTEN or a mounted config is followed. A wildcard listen
# address (0.0.0.0, [::]) is probed on the loopback. When sashad serves TLS itself
# (tls.cert_file), bash cannot speak it: the check is then only that the port accepts a
# connection.
set -eu

listen=${1:-}
tls=0
if [ -z "$listen" ]; then
  config=$(sashad config check)
  listen=$(sed -n 's/^listen = "\(.*\)"$/\1/p' <<<"$config")
  listen=${listen%%$'\n'*}
  if grep -q '^cert_file = ' <<<"$config"; then
    tls=1
  fi
fi
[ -n "$listen" ] || { echo "healthcheck: cannot find server.listen" >&2; exit 1; }

host=${listen%:*}
port=${listen##*:}
host=${host#[}
host=${host%]}
case "$host" in
  0.0.0.0 | "") host=127.0.0.1 ;;
  ::) host=::1 ;;
esac

exec 3<>"/dev/tcp/$host/$port"
if [ "$tls" = 1 ]; then
  exit 0
fi
printf 'GET /healthz HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
status=""
IFS= read -r -t 5 status <&3 || true
exec 3<&-
case "$status" in
  "HTTP/1."?" 200 "*) exit 0 ;;
esac
echo "healthcheck: GET /healthz on $host:$port answered: ${status%$'\r'}" >&2
exit 1
