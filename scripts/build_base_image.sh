#!/usr/bin/env bash
# Build a Debian bookworm + Python 3.11 base image from Debian's own packages, for hosts that
# cannot pull python:3.11-slim-bookworm from Docker Hub. Use it with
#   docker build --build-arg BASE_IMAGE=dogbreed-base:bookworm-py311 ...
#
# Usage: scripts/build_base_image.sh [--force] [--ca-cert FILE] [--mirror URL] [TAG]
#   TAG            image tag (default dogbreed-base:bookworm-py311)
#   --force        rebuild even if TAG already exists (default: skip, it is a cache)
#   --ca-cert FILE add FILE (PEM) to the image's trusted CAs, for a TLS-intercepting proxy;
#                  also read from $DOGBREED_EXTRA_CA_CERT
#   --mirror URL   Debian mirror (default: the first URI configured in this host's apt sources,
#                  else http://deb.debian.org/debian); also read from $DEBIAN_MIRROR
set -euo pipefail

tag="dogbreed-base:bookworm-py311"
force=0
ca_cert="${DOGBREED_EXTRA_CA_CERT:-}"
mirror="${DEBIAN_MIRROR:-}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --force) force=1 ;;
    --ca-cert) ca_cert="$2"; shift ;;
    --mirror) mirror="$2"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    -*) echo "unknown option: $1" >&2; exit 2 ;;
    *) tag="$1" ;;
  esac
  shift
done

if [[ "$force" -eq 0 ]] && docker image inspect "$tag" >/dev/null 2>&1; then
  echo "base image $tag exists (use --force to rebuild)"
  exit 0
fi
if [[ -n "$ca_cert" && ! -f "$ca_cert" ]]; then
  echo "CA certificate file not found: $ca_cert" >&2
  exit 2
fi
if [[ $EUID -ne 0 ]]; then
  echo "debootstrap needs root" >&2
  exit 1
fi

# The mirror this host already uses (deb822 .sources or one-line .list files).
host_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f "$f" ]] || continue
    # Only a mirror that serves the main Debian suite, not debian-security or third parties.
    awk '/^URIs:/ {print $2} /^deb / {print ($2 ~ /^\[/) ? $3 : $2}' "$f" \
      | grep -E '/debian/?$' | head -n1 && return 0
  done
  echo "http://deb.debian.org/debian"
}
mirror="${mirror:-$(host_mirror)}"
mirror="${mirror%/}"
security="${mirror%/debian}/debian-security"

rootfs="$(mktemp -d /tmp/dogbreed-base.XXXXXX)"
trap 'rm -rf "$rootfs"' EXIT

echo "debootstrap bookworm from $mirror into $rootfs"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$rootfs" "$mirror"

cat >"$rootfs/etc/apt/sources.list" <<EOF
deb $mirror bookworm main
deb $mirror bookworm-updates main
deb $security bookworm-security main
EOF
# Same apt behaviour as Docker's official Debian images: no recommends, no caches kept.
cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
APT::Install-Recommends "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
EOF

# The proxy's CA first: the upgrade below may go through it (an https mirror).
if [[ -n "$ca_cert" ]]; then
  install -m 0644 "$ca_cert" "$rootfs/usr/local/share/ca-certificates/dogbreed-extra-ca.crt"
  chroot "$rootfs" update-ca-certificates
fi

# debootstrap installs the release as first published: bring in bookworm's security fixes.
chroot "$rootfs" /usr/bin/env DEBIAN_FRONTEND=noninteractive sh -c 'apt-get update && apt-get -y upgrade'

# What a container does not need: package caches, lists, docs and man pages.
rm -rf "${rootfs:?}"/var/cache/apt/archives/*.deb "${rootfs:?}"/var/lib/apt/lists/* \
  "${rootfs:?}"/usr/share/doc/* "${rootfs:?}"/usr/share/man/* "${rootfs:?}"/tmp/* "${rootfs:?}"/dev/*

tar --numeric-owner -C "$rootfs" -c . | docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  --message "debootstrap bookworm + python3 from $mirror" \
  - "$tag"
docker run --rm --network none "$tag" python3 -c 'import sys, venv, ssl; print(sys.version)'
echo "built $tag"
