#!/usr/bin/env bash
# Installs what the portal needs and skips what is present.
#   scripts/install.sh          sandbox: Debian packages, FerretDB, venv, node tools
#   scripts/install.sh test     the same plus Chromium and the dev requirements
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-run}"
FERRETDB_VERSION=v1.24.2

say() { printf '==> %s\n' "$*"; }

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
pg_server_present() { ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; }

pg_server_present || need_pkgs+=(postgresql)
have psql || need_pkgs+=(postgresql-client)
have redis-server || need_pkgs+=(redis-server)
have pigz || need_pkgs+=(pigz)
have runuser || need_pkgs+=(util-linux)
have go || need_pkgs+=(golang-go)
have node || need_pkgs+=(nodejs npm)
if [ "$MODE" = test ]; then
  [ -x /usr/bin/chromium ] || need_pkgs+=(chromium)
fi
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  say "installing Debian packages: ${need_pkgs[*]}"
  if [ "$(id -u)" -ne 0 ]; then echo "need root to apt-get install ${need_pkgs[*]}" >&2; exit 1; fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
  # Debian's postgresql package starts a cluster of its own; the portal runs private ones.
  if command -v systemctl >/dev/null 2>&1; then systemctl disable --now postgresql redis-server >/dev/null 2>&1 || true; fi
  service postgresql stop >/dev/null 2>&1 || true
  service redis-server stop >/dev/null 2>&1 || true
fi

# FerretDB, built from the Go module proxy's v1.24.2 source.  `go install
# ...@v1.24.2` builds a binary that panics at start (FerretDB's release tooling
# normally writes build/version/version.txt), so we build the same module
# with that one file written.
if [ ! -x .tools/bin/ferretdb ] || ! .tools/bin/ferretdb --version 2>/dev/null | grep -q "$FERRETDB_VERSION"; then
  say "building FerretDB $FERRETDB_VERSION"
  mkdir -p .tools/bin .tools/src
  src_dir=$(go mod download -json "github.com/FerretDB/FerretDB@${FERRETDB_VERSION}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  rm -rf .tools/src/ferretdb
  cp -r "$src_dir" .tools/src/ferretdb
  chmod -R u+w .tools/src/ferretdb
  echo "$FERRETDB_VERSION" > .tools/src/ferretdb/build/version/version.txt
  (cd .tools/src/ferretdb && CGO_ENABLED=0 go build -trimpath -o ../../bin/ferretdb ./cmd/ferretdb)
  rm -rf .tools/src/ferretdb
fi

# Python virtualenv with pinned requirements.
req_stamp=.venv/.requirements-$MODE
want=$(cat requirements.txt $([ "$MODE" = test ] && echo requirements-dev.txt) | sha256sum | cut -c1-16)
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  python3 -m venv .venv
fi
if [ "$(cat "$req_stamp" 2>/dev/null)" != "$want" ]; then
  say "installing Python packages"
  .venv/bin/pip install -q --disable-pip-version-check -r requirements.txt $([ "$MODE" = test ] && echo "-r requirements-dev.txt")
  echo "$want" > "$req_stamp"
fi

# node-pg-migrate from the committed lock file.
lock_stamp=node_modules/.lock-sha
want_lock=$(sha256sum package-lock.json | cut -c1-16)
if [ "$(cat "$lock_stamp" 2>/dev/null)" != "$want_lock" ]; then
  say "installing node-pg-migrate (npm ci)"
  npm ci --no-audit --no-fund --silent
  echo "$want_lock" > "$lock_stamp"
fi
say "dependencies ready"
