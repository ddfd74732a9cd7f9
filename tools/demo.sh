#!/usr/bin/env bash
# `make demo`: the whole product, with no API key. Starts the loopback mock of the Anthropic API
# (examples/mock_anthropic.rs, the tests' own mock) and a daemon pointed at it, prints where to
# go and what to paste, and stops both on Ctrl-C. `make demo` builds both binaries first.
#
# Settings (environment): DEMO_LISTEN (127.0.0.1:3001), DEMO_MOCK_LISTEN (127.0.0.1:3002),
# DEMO_DATA_DIR (./data-demo; delete it to start over), DEMO_BUILD (release).
set -euo pipefail
cd "$(dirname "$0")/.."

listen=${DEMO_LISTEN:-127.0.0.1:3001}
mock_listen=${DEMO_MOCK_LISTEN:-127.0.0.1:3002}
data_dir=${DEMO_DATA_DIR:-./data-demo}
# Absolute: the daemon hands the CLI a HOME under the data directory, and a relative one would
# resolve against the project folder the CLI runs in.
data_dir=$(realpath -m -- "$data_dir")
build=${DEMO_BUILD:-release}
sashad=target/$build/sashad
mock=target/$build/examples/mock_anthropic
claude=$PWD/tools/claude/node_modules/.bin/claude

for f in "$sashad" "$mock" "$claude"; do
  [ -x "$f" ] || { echo "demo: $f is missing; run \`make demo\`, which builds it" >&2; exit 1; }
done

pids=()
stop() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop EXIT
trap 'echo; echo "demo: stopping"; exit 0' INT TERM

# Both get a clean environment for what they read, so a leftover ANTHROPIC_* or SASHAD__*
# variable in this shell cannot point the demo at the real API.
clean_env=(env -u ANTHROPIC_API_KEY -u ANTHROPIC_BASE_URL -u CLAUDE_CODE_OAUTH_TOKEN -u RUST_LOG)
for name in $(env | sed -n 's/^\(SASHAD_[A-Za-z0-9_]*\)=.*/\1/p'); do clean_env+=(-u "$name"); done

revoked_key=sk-ant-demo-revoked-0000
mkdir -p -m 700 "$data_dir"
# The mock logs one line per request; they go to a file, so this terminal shows the daemon's.
"${clean_env[@]}" "$mock" --listen "$mock_listen" --reject "$revoked_key" \
  >/dev/null 2>"$data_dir/mock_anthropic.log" &
pids+=($!)

"${clean_env[@]}" \
  SASHAD__SERVER__LISTEN="$listen" \
  SASHAD__STORAGE__DATA_DIR="$data_dir" \
  SASHAD__ANTHROPIC__BASE_URL="http://$mock_listen" \
  SASHAD__CLAUDE__BINARY="$claude" \
  SASHAD__CLAUDE__EXTRA_ARGS='["--allowedTools","Bash"]' \
  "$sashad" serve &
pids+=($!)

# Wait until the daemon answers (or one of the two exits).
host=${listen%:*} port=${listen##*:}
for _ in $(seq 1 300); do
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || { echo "demo: a process exited early; see its output above" >&2; exit 1; }
  done
  if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then break; fi
  sleep 0.1
done

cat <<TEXT

  sashad demo: the real daemon and the real Claude Code CLI, talking to a mock of the
  Anthropic API on http://$mock_listen (no network, no cost).

    open        http://$listen
    register    any username and password (the first account becomes the admin)
    API key     sk-ant-demo-key-0000   (the mock accepts any key that starts with sk-ant-
                and refuses others; $revoked_key is accepted, then
                rejected when Claude uses it, as a revoked key would be)
    try         "hello" · "please be SLOW" (then Stop) · "TOOL:ls -la" (runs ls in the
                project folder) · "ECHO" (shows what the mock received)

  Data is in $data_dir (delete it to start over); the mock's log is
  $data_dir/mock_anthropic.log. Ctrl-C stops both.

TEXT
wait -n "${pids[@]}" || true
echo "demo: a process exited; stopping the other" >&2
