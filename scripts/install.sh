#!/usr/bin/env bash
# Installs what the portal needs and skips what is present.
#   scripts/install.sh          sandbox: Debian packages, FerretDB, venv, node tools
#                               (and etcd, kube-apiserver with HCAPADMIN_SANDBOX_KUBE=true)
#   scripts/install.sh test     the same plus Chromium, the dev requirements, etcd and kube-apiserver
set -euo pipefail
cd "$(dirname "$0")/.."
MODE="${1:-run}"
FERRETDB_VERSION=v1.24.2
KUBE_VERSION=v1.34.4
ETCD_VERSION=v3.6.4

say() { printf '==> %s\n' "$*"; }

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }
# reports BINARY FLAG PATTERN: the binary exists and its FLAG output matches.
# (Output captured first: with pipefail, `binary | grep -q` fails whenever grep
# stops reading before the binary has finished writing.)
reports() {
  local out
  [ -x "$1" ] || return 1
  out=$("$1" "$2" 2>/dev/null) || return 1
  grep -q -- "$3" <<<"$out"
}
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
if ! reports .tools/bin/ferretdb --version "$FERRETDB_VERSION"; then
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

# etcd and kube-apiserver: a real Kubernetes API server for the OpenShift-facing
# tests (devtools/kube.py starts them); a function so that the sandbox can
# call it too once it runs one.  Built from their Go modules: k8s.io/kubernetes
# points its k8s.io/* dependencies at ./staging, which a module download does
# not contain, and etcd's server module points at sibling folders; both build
# once those replace lines name the published modules of the same release.
# The module's vendor/ and go.work do not match a module download, so they go.
kube_tools() {
  local kube_minor_patch=${KUBE_VERSION#v1.} src_dir
  if ! reports .tools/bin/etcd --version "etcd Version: ${ETCD_VERSION#v}$"; then
    say "building etcd $ETCD_VERSION"
    mkdir -p .tools/bin .tools/src
    src_dir=$(go mod download -json "go.etcd.io/etcd/server/v3@${ETCD_VERSION}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    rm -rf .tools/src/etcd
    cp -r "$src_dir" .tools/src/etcd
    chmod -R u+w .tools/src/etcd
    rm -rf .tools/src/etcd/vendor .tools/src/etcd/go.work .tools/src/etcd/go.work.sum
    sed -E -i "s#^([[:space:]]*)(go\.etcd\.io/etcd/[a-z0-9/]+)[[:space:]]+=>[[:space:]]+\.\./[^[:space:]]+[[:space:]]*\$#\1\2 => \2 ${ETCD_VERSION}#" .tools/src/etcd/go.mod
    (cd .tools/src/etcd && GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o ../../bin/etcd .)
    rm -rf .tools/src/etcd
  fi
  if ! reports .tools/bin/kube-apiserver --version "Kubernetes ${KUBE_VERSION}$"; then
    say "building kube-apiserver $KUBE_VERSION (several minutes)"
    mkdir -p .tools/bin .tools/src
    src_dir=$(go mod download -json "k8s.io/kubernetes@${KUBE_VERSION}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    rm -rf .tools/src/kubernetes
    cp -r "$src_dir" .tools/src/kubernetes
    chmod -R u+w .tools/src/kubernetes
    rm -rf .tools/src/kubernetes/vendor .tools/src/kubernetes/go.work .tools/src/kubernetes/go.work.sum
    sed -E -i "s#^([[:space:]]*)k8s\.io/([a-z0-9-]+)[[:space:]]+=>[[:space:]]+\./staging/src/k8s\.io/[a-z0-9-]+[[:space:]]*\$#\1k8s.io/\2 => k8s.io/\2 v0.${kube_minor_patch}#" .tools/src/kubernetes/go.mod
    # The version the binary reports (and serves at /version) is stamped as
    # Kubernetes' own release build does.
    local ldflags="-s -w"
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ldflags="$ldflags -X $pkg.gitVersion=${KUBE_VERSION} -X $pkg.gitMajor=1 -X $pkg.gitMinor=${kube_minor_patch%%.*} -X $pkg.gitTreeState=clean"
    done
    (cd .tools/src/kubernetes && GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o ../../bin/kube-apiserver ./cmd/kube-apiserver)
    rm -rf .tools/src/kubernetes
  fi
}
# The sandbox's token login (HCAPADMIN_SANDBOX_KUBE=true) runs the same server.
sandbox_kube=$(printf '%s' "${HCAPADMIN_SANDBOX_KUBE:-false}" | tr '[:upper:]' '[:lower:]')
if [ "$MODE" = test ] || [[ "$sandbox_kube" =~ ^(true|1|yes|on)$ ]]; then
  kube_tools
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
