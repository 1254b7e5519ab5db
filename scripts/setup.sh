#!/usr/bin/env bash
# Set up this machine for dogbreed (a fresh Debian bookworm machine included): install what is
# missing from Debian's packages (Docker engine and docker-compose, debootstrap, Java 17 for
# multi-model-server, ...), start dockerd, create .venv with every extra, build the offline base
# image and both images. Idempotent: on a provisioned machine it only checks, reuses the venv
# and Docker's layer cache (a code change rebuilds the images in under a minute).
# Root is needed only when something must be installed or dockerd started.
# Environment: DOGBREED_EXTRA_CA_CERT (PEM for a TLS-intercepting proxy; default: the host's
# own additions in /usr/local/share/ca-certificates), PIP_INDEX / PIP_EXTRA_INDEX (see
# scripts/build_images.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
started=$SECONDS
log() { echo "== [$(date -u +%H:%M:%S) +$((SECONDS - started))s] $*"; }

need_root() {
  if [[ $EUID -ne 0 ]]; then
    echo "setup: $1 needs root: run it as root (or with sudo)" >&2
    exit 1
  fi
}

# docker-registry: a local registry for the ECR push test; the JRE runs multi-model-server in
# the host venv's serving tests; chromium and chromium-driver: the page's browser test.
packages=(ca-certificates curl git python3 python3-venv python3-dev gcc debootstrap docker.io
  docker-compose docker-registry openjdk-17-jre-headless chromium chromium-driver)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  need_root "apt-get install ${missing[*]}"
  log "apt-get install ${missing[*]}"
  apt-get update
  apt-get install -y --no-install-recommends "${missing[@]}"
fi

if ! docker info >/dev/null 2>&1; then
  need_root "starting dockerd"
  log "starting dockerd"
  nohup dockerd >/var/log/dockerd-ci.log 2>&1 &
  for _ in $(seq 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { tail -20 /var/log/dockerd-ci.log; exit 1; }
fi
log "docker $(docker version -f '{{.Server.Version}}'), $(docker-compose version --short 2>/dev/null || true)"

if [[ ! -x .venv/bin/python ]]; then
  log "creating .venv"
  python3 -m venv .venv
fi
log "pip install -e .[train,serve,aws,tune,dev]"
.venv/bin/pip install --quiet -e '.[train,serve,aws,tune,dev]'

ca_cert="${DOGBREED_EXTRA_CA_CERT:-}"
if [[ -z "$ca_cert" ]] && compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  ca_cert="$(mktemp)"
  trap 'rm -f "$ca_cert"' EXIT
  cat /usr/local/share/ca-certificates/*.crt >"$ca_cert"
fi
log "base image"
scripts/build_base_image.sh ${ca_cert:+--ca-cert "$ca_cert"}
log "images"
BASE_IMAGE=dogbreed-base:bookworm-py311 scripts/build_images.sh train serve
docker image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep '^dogbreed'

