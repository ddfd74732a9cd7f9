#!/usr/bin/env bash
# Installs what sashad needs around its binary, the same way everywhere: `make run` and
# `make test` (the `cli` target), the Dockerfile, and operators installing under systemd
# (docs/deploy.md). One script, so the CLI the tests run and the CLI the image ships can never
# drift apart.
#
#   install-runtime.sh cli [--prune] PREFIX
#       Installs the pinned Claude Code CLI (tools/claude/package.json + package-lock.json)
#       into PREFIX with `npm ci`, so npm fetches exactly the tarballs the lockfile names and
#       checks their integrity. The CLI ends up at PREFIX/node_modules/.bin/claude. When
#       PREFIX is tools/claude itself (make), it installs in place. Needs node and npm.
#       --prune  removes the second hard link npm's postinstall leaves of the ~400 MB native
#                executable (for an image stage: a COPY might not keep the link).
#
#   install-runtime.sh layout [--user NAME] [--uid N] [--data-dir DIR] [--config-dir DIR]
#                             [--config FILE]
#       Creates the runtime layout: a system user and group NAME (uid and gid N if given,
#       home DIR, no login shell), the data directory (owned by NAME, mode 0700: it holds the
#       store, the workspace and possibly the master key), the config directory (root:NAME,
#       0750) and FILE installed in it as sashad.toml (root:NAME, 0640, so the daemon can
#       read but not rewrite its config). An existing sashad.toml is kept. Needs root when
#       --user is given.
#
# Environment: SASHAD_CLI_PIN_DIR overrides where the pin is read from (default: tools/claude
# next to this script's folder).
set -eu

script_dir=$(cd "$(dirname "$0")" && pwd -P)

die() {
  echo "install-runtime: $*" >&2
  exit 1
}

usage() {
  sed -n '7,23p' "$script_dir/$(basename "$0")" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

# The pinned version, read from package.json without needing jq.
pinned_version() {
  sed -n 's/.*"@anthropic-ai\/claude-code": *"\([^"]*\)".*/\1/p' "$1/package.json" | head -n 1
}

install_cli() {
  local prune=0 prefix=""
  while [ $# -gt 0 ]; do
    case "$1" in
      --prune) prune=1 ;;
      -*) usage ;;
      *) [ -z "$prefix" ] || usage; prefix=$1 ;;
    esac
    shift
  done
  [ -n "$prefix" ] || usage
  command -v npm >/dev/null || die "npm is needed to install the Claude Code CLI (apt-get install nodejs npm)"

  local pin_dir=${SASHAD_CLI_PIN_DIR:-$script_dir/../tools/claude}
  if [ ! -f "$pin_dir/package.json" ] || [ ! -f "$pin_dir/package-lock.json" ]; then
    die "no package.json and package-lock.json in $pin_dir"
  fi
  pin_dir=$(cd "$pin_dir" && pwd -P)
  mkdir -p "$prefix"
  prefix=$(cd "$prefix" && pwd -P)
  if [ "$prefix" != "$pin_dir" ]; then
    cp "$pin_dir/package.json" "$pin_dir/package-lock.json" "$prefix/"
  fi

  local version
  version=$(pinned_version "$prefix")
  [ -n "$version" ] || die "$prefix/package.json does not pin @anthropic-ai/claude-code"
  echo "install-runtime: installing @anthropic-ai/claude-code $version into $prefix" >&2
  # --no-audit/--no-fund: no extra registry round trips; the lockfile's integrity hashes are
  # what protects the install.
  (cd "$prefix" && npm ci --no-audit --no-fund --no-update-notifier)

  local bin=$prefix/node_modules/.bin/claude
  [ -x "$bin" ] || die "npm did not install $bin"
  # The postinstall swaps a placeholder for the platform's native executable. If that failed
  # (no package for this platform), the placeholder would only fail later, at a user's first
  # message: check now, and check it is the pinned version.
  local reported
  reported=$("$bin" --version 2>&1) || die "$bin does not run: $reported"
  case "$reported" in
    "$version"*) ;;
    *) die "$bin reports '$reported', expected version $version" ;;
  esac

  if [ "$prune" = 1 ]; then
    local exe=$prefix/node_modules/@anthropic-ai/claude-code/bin/claude.exe copy
    for copy in "$prefix"/node_modules/@anthropic-ai/claude-code-*/claude; do
      if [ -f "$copy" ] && [ "$copy" -ef "$exe" ]; then
        rm -f "$copy"
      fi
    done
    "$bin" --version >/dev/null || die "$bin stopped working after pruning"
  fi
  echo "install-runtime: $bin is Claude Code $reported" >&2
}

install_layout() {
  local user="" uid="" data_dir="" config_dir="" config=""
  while [ $# -gt 0 ]; do
    [ $# -ge 2 ] || usage
    case "$1" in
      --user) user=$2 ;;
      --uid) uid=$2 ;;
      --data-dir) data_dir=$2 ;;
      --config-dir) config_dir=$2 ;;
      --config) config=$2 ;;
      *) usage ;;
    esac
    shift 2
  done
  if [ -n "$config" ]; then
    [ -n "$config_dir" ] || die "--config needs --config-dir"
    [ -f "$config" ] || die "no config file $config"
  fi
  local group=""
  if [ -n "$user" ]; then
    [ "$(id -u)" = 0 ] || die "creating user $user and handing it folders needs root"
    group=$user
    if ! getent group "$group" >/dev/null; then
      groupadd --system ${uid:+--gid "$uid"} "$group"
    fi
    if ! getent passwd "$user" >/dev/null; then
      # The home is the data directory (or /nonexistent): sashad gives each child its own
      # HOME under the workspace, so the service user's own home holds nothing.
      useradd --system --gid "$group" ${uid:+--uid "$uid"} \
        --home-dir "${data_dir:-/nonexistent}" --no-create-home \
        --shell /usr/sbin/nologin --comment "sashad daemon" "$user"
    fi
  elif [ -n "$uid" ]; then
    die "--uid needs --user"
  fi
  if [ -n "$data_dir" ]; then
    install -d -m 0700 ${user:+-o "$user" -g "$group"} "$data_dir"
    # install -d leaves an existing directory's mode alone: tighten it explicitly.
    chmod 0700 "$data_dir"
  fi
  if [ -n "$config_dir" ]; then
    install -d -m 0750 ${group:+-o root -g "$group"} "$config_dir"
  fi
  if [ -n "$config" ]; then
    if [ -e "$config_dir/sashad.toml" ]; then
      echo "install-runtime: keeping the existing $config_dir/sashad.toml" >&2
    else
      install -m 0640 ${group:+-o root -g "$group"} "$config" "$config_dir/sashad.toml"
    fi
  fi
}

[ $# -ge 1 ] || usage
command=$1
shift
case "$command" in
  cli) install_cli "$@" ;;
  layout) install_layout "$@" ;;
  -h | --help | help) usage ;;
  *) usage ;;
esac
