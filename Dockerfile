# syntax=docker/dockerfile:1
#
# sashad's container image.
#
#   docker build -t sashad .
#   docker compose up -d          # see docker-compose.yml and docs/deploy.md
#
# Three stages: `build` compiles sashad, `cli` installs the pinned Claude Code CLI with npm, and
# the runtime image takes only their results: it has neither a Rust toolchain nor Node.js.
# CI lints this file with hadolint (make lint-packaging); no Docker engine runs there, so the
# image's layout is exercised by tests/it/container.rs instead (same config, paths, env, key).

ARG RUST_VERSION=1.95
ARG NODE_VERSION=22
ARG DEBIAN_RELEASE=bookworm

# ---- build: the sashad binary -------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
# Dependencies first, in a layer of their own that only Cargo.toml and Cargo.lock invalidate.
# Cargo wants every target the manifest declares to exist, hence the stub sources.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > benches/hot_path.rs \
 && cp benches/hot_path.rs benches/load.rs \
 && cargo build --release --locked \
 && rm -rf src benches
COPY . .
# COPY keeps the build context's modification times, which can be older than the stub build's
# outputs: touch the crate roots so cargo rebuilds sashad itself rather than ship the stub.
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && install -m 0755 target/release/sashad /usr/local/bin/sashad

# ---- cli: the pinned Claude Code CLI --------------------------------------------------------
# The same script and lockfile as `make test`, so the image runs the CLI the tests ran. The
# package wants Node >= 22 (its "engines"), hence the official Node image for this step only.
FROM node:${NODE_VERSION}-${DEBIAN_RELEASE}-slim AS cli
WORKDIR /src
COPY scripts/install-runtime.sh scripts/
COPY tools/claude/package.json tools/claude/package-lock.json tools/claude/
# --prune drops the duplicate hard link of the ~400 MB native executable, so the COPY below
# cannot double it.
RUN scripts/install-runtime.sh cli --prune /opt/sashad/claude

# ---- runtime ---------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim

# Node.js is deliberately absent. The CLI npm installs is a native executable: the package's
# postinstall (install.cjs) puts the platform's binary in place of bin/claude.exe, and `claude`
# runs without node (checked: a whole chat turn execs no node). Node is only needed to run npm,
# in the `cli` stage above. If your users' sessions need more tools (node for MCP servers started
# with npx, git, ripgrep, python3), add Debian packages at build time:
#   docker build --build-arg EXTRA_PACKAGES="git nodejs npm ripgrep" -t sashad .
ARG EXTRA_PACKAGES=""

# bubblewrap: the sandbox every child runs in (issue "Isolation between users"); sashad checks
#   for it at startup and refuses to start without it.
# util-linux: setpriv, which drops each child to its user's own uid and gid with no capability
#   and no_new_privs. Debian marks it essential, so it is there anyway; listed so that a change
#   of base image cannot lose it silently.
# ca-certificates: the CLI and sashad talk HTTPS to the Anthropic API (or Bedrock, Vertex).
# tini: PID 1, see ENTRYPOINT.
# Versions are not pinned: the base tag pins the Debian release, whose updates are security fixes.
# hadolint ignore=DL3008,SC2086
RUN apt-get update \
 && apt-get install -y --no-install-recommends bubblewrap util-linux ca-certificates tini \
      ${EXTRA_PACKAGES} \
 && rm -rf /var/lib/apt/lists/*

# The runtime layout, made by the same script operators use outside Docker: /data owned by
# root with mode 0700 and /etc/sashad/sashad.toml (root, 0640). No service user: sashad runs
# as root (see USER below), and each user's children run under a uid of their own from
# isolation.uid_base (1879048192 and up), which no account in the image uses.
COPY scripts/install-runtime.sh /usr/local/lib/sashad/install-runtime.sh
COPY scripts/healthcheck.sh /usr/local/bin/sashad-healthcheck
COPY config/container.toml /usr/local/share/sashad/sashad.toml
RUN /usr/local/lib/sashad/install-runtime.sh layout \
      --data-dir /data --config-dir /etc/sashad --config /usr/local/share/sashad/sashad.toml \
 && ln -s /opt/sashad/claude/node_modules/.bin/claude /usr/local/bin/claude

COPY --from=cli /opt/sashad/claude /opt/sashad/claude
COPY --from=build /usr/local/bin/sashad /usr/local/bin/sashad

# The config file; keys can also come from SASHAD__SECTION__KEY variables.
ENV SASHAD_CONFIG=/etc/sashad/sashad.toml

# Root, on purpose: the image runs its users' children in isolation.mode = "uid" (set in
# config/container.toml), where sashad starts bubblewrap as root and bubblewrap runs setpriv,
# which switches to the user's own uid and drops every capability before the CLI starts. Only
# root can set another uid (bubblewrap refuses to run with capabilities as any other user), and
# that is what keeps one user's files, /proc and credentials closed to another's Claude even
# outside the sandbox's mount view. Root here is not root with Docker's defaults:
# docker-compose.yml drops every capability but the seven sashad needs, and says why for each;
# docs/deploy.md ("Isolation between users") weighs this against user namespaces.
# hadolint ignore=DL3002
USER 0:0
WORKDIR /data
# sled, users' homes and projects, and the generated key when no secret is given. A named
# volume starts as a copy of this folder: owned by root with mode 0700, so only sashad can
# reach into it; bubblewrap binds each child's home and project into its sandbox by path, so
# the child needs no access to the folders above them.
VOLUME ["/data"]
EXPOSE 3001

# GET /healthz on the configured port with bash alone (no curl in the image).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["/usr/local/bin/sashad-healthcheck"]

# sashad stops its sessions on SIGTERM (each child: stdin closed, SIGTERM, SIGKILL) and exits 0.
# That can take about 20 s with the default timeouts (config/sashad.service has the figures):
# give `docker stop` a longer grace period (docker-compose.yml sets stop_grace_period: 60s).
STOPSIGNAL SIGTERM

# Issue 6 asks for ENTRYPOINT ["sashad","serve"] with tini as PID 1; both hold only if tini is
# the entrypoint. tini is PID 1: it passes SIGTERM on to sashad and reaps processes re-parented
# to it (tools the CLI started whose parent exited), which sashad as PID 1 would leave as zombies.
# Arguments after the image name go to `sashad serve`: docker run sashad --log-level debug.
# No need for `docker run --init`: tini is already here.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/sashad", "serve"]
