#!/usr/bin/env bash
# Checks config/sashad.service without installing anything on the machine:
#
#   check-systemd-unit.sh UNIT SASHAD_BINARY
#
# 1. `systemd-analyze verify` on a copy of UNIT whose ExecStart= runs SASHAD_BINARY (the one
#    just built) instead of /usr/local/bin/sashad, which does not exist on a build machine.
#    verify checks every directive and that each Exec*= program exists and is executable; any
#    message it prints about the unit fails the check.
# 2. The unit's Environment= settings, given to `SASHAD_BINARY config check` with the config file
#    ExecStart names replaced by the repository's config/sashad.toml: a misspelt SASHAD__ key
#    is an error there (config structs deny unknown fields).
set -eu

unit=${1:?usage: check-systemd-unit.sh UNIT SASHAD_BINARY}
bin=${2:?usage: check-systemd-unit.sh UNIT SASHAD_BINARY}
[ -f "$unit" ] || { echo "no unit file $unit" >&2; exit 1; }
[ -x "$bin" ] || { echo "no executable $bin" >&2; exit 1; }
bin=$(cd "$(dirname "$bin")" && pwd -P)/$(basename "$bin")
repo=$(cd "$(dirname "$0")/.." && pwd -P)

grep -q '^ExecStart=/usr/local/bin/sashad ' "$unit" \
  || { echo "$unit: ExecStart= does not run /usr/local/bin/sashad" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
copy=$tmp/$(basename "$unit")
sed "s#^ExecStart=/usr/local/bin/sashad #ExecStart=$bin #" "$unit" >"$copy"
echo "systemd-analyze verify $unit (ExecStart= runs $bin)"
# verify exits 0 on an unknown directive or a value it cannot parse (it only logs "ignoring"):
# any message about this unit counts as a failure. Messages about the machine's own units do not.
status=0
report=$(systemd-analyze verify "$copy" 2>&1) || status=$?
if [ -n "$report" ]; then
  echo "${report//"$copy"/"$unit"}" >&2
fi
if [ "$status" -ne 0 ] || grep -qF "$copy" <<<"$report"; then
  echo "systemd-analyze verify: $unit has problems (above)" >&2
  exit 1
fi

# Environment=NAME=VALUE lines; %S is the state directory root (/var/lib for system units).
vars=()
while IFS= read -r line; do
  value=${line#Environment=}
  vars+=("${value//%S//var/lib}")
done < <(grep '^Environment=' "$unit")
echo "sashad config check with the unit's Environment= (${#vars[@]} variables)"
env -i PATH="$PATH" "${vars[@]}" "$bin" --config "$repo/config/sashad.toml" config check >/dev/null
