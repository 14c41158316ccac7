#!/usr/bin/env bash
# Build the base images the Dockerfiles start from, locally, from Debian's packages, for a machine that reaches no
# container registry (make container-test; docs/operations.md, "Air-gapped and mirrored builds"):
#   debian     debootstrap --variant=minbase of bookworm, imported as an image
#   python     debian + Debian's python3 (3.11, as python:3.11-slim-bookworm) and the host's CA store
#   mosquitto  debian + Debian's mosquitto, laid out like eclipse-mosquitto
#   redis      debian + Debian's redis-server
#   postgres   debian + Debian's PostgreSQL, with an entrypoint like the official image's (compose.postgres.yaml)
#   uv         the uv binary of the version the Dockerfiles name, from its wheel on PyPI
# Each tag is a digest of its recipe (this script, the Containerfiles, the mirror, the uv version, the host's CAs),
# so a second run finds them all and builds nothing. Prints the build arguments as IMAGE_*=... lines (the names .env
# uses) and writes them to $BASES_ENV when set. Needs root (debootstrap) and podman (infra/containers/setup-podman.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
engine=${ENGINE:-podman}
suite=${DEBIAN_SUITE:-bookworm}
prefix=${BASE_PREFIX:-localhost/a2a-mesh-base}
host_ca=${HOST_CA_FILE:-/etc/ssl/certs/ca-certificates.crt}

# the Debian mirror this host's apt uses (so a local mirror or proxy set up for apt serves debootstrap too)
mirror=${DEBIAN_MIRROR:-$(grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
  2>/dev/null | head -1 | awk '{print $2}' || true)}
mirror=${mirror:-http://deb.debian.org/debian}
uv_version=$(sed -nE 's/^ARG UV_IMAGE=.*:([0-9][0-9.]*)$/\1/p' "$repo/services/Dockerfile")
[ -n "$uv_version" ] || { echo "build-bases: no ARG UV_IMAGE=...:<version> in services/Dockerfile" >&2; exit 1; }
[ -r "$host_ca" ] || { echo "build-bases: no CA store at $host_ca (set HOST_CA_FILE)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# raise it when a change here changes what an image holds (the Containerfiles are digested themselves)
recipe_version=2
recipe_digest() { # the digest of everything that decides an image: its Containerfile, the recipe version, and $*
  { echo "$recipe_version"; [ -f "$here/bases/$1.Containerfile" ] && cat "$here/bases/$1.Containerfile"; echo "$*"; } \
    | sha256sum | cut -c1-16
}

have() { "$engine" image exists "$1" 2>/dev/null; }

# drop this base's older tags (recipes that changed), so the cache does not grow with every change
prune_others() {
  "$engine" images --format '{{.Repository}}:{{.Tag}}' --filter "reference=$prefix/$1" \
    | grep -vxF "$2" | xargs -r "$engine" rmi -f >/dev/null 2>&1 || true
}

debian="$prefix/debian:$suite-$(recipe_digest debian "$suite" "$mirror")"
if ! have "$debian"; then
  echo "build-bases: debootstrap $suite from $mirror" >&2
  debootstrap --variant=minbase "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  # slim, as Debian's own slim images: no documentation, manual pages or translations, now or from later installs
  cat >"$work/rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'DPKG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
DPKG
  find "$work/rootfs/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
  rm -rf "$work"/rootfs/usr/share/{man,info,locale,lintian}/* "$work"/rootfs/var/lib/apt/lists/* \
    "$work"/rootfs/var/cache/apt/*.bin "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/log/*.log
  tar -C "$work/rootfs" --numeric-owner -c . | "$engine" import --quiet - "$debian" >/dev/null
  rm -rf "$work/rootfs"
  prune_others debian "$debian"
fi

ca_digest=$(sha256sum "$host_ca" | cut -c1-16)
declare -A built
for base in python mosquitto redis postgres; do
  extra=$([ "$base" = python ] && echo "$ca_digest" || true)
  image="$prefix/$base:$suite-$(recipe_digest "$base" "$debian" "$extra")"
  if ! have "$image"; then
    echo "build-bases: $image" >&2
    mkdir -p "$work/$base"
    [ "$base" = python ] && cp "$host_ca" "$work/$base/host-ca.crt"
    # the build's own network is the host's, as apt's is on the host (no bridge or NAT needed to reach the mirror)
    "$engine" build --quiet --network=host --build-arg "DEBIAN_IMAGE=$debian" \
      -f "$here/bases/$base.Containerfile" -t "$image" "$work/$base" >/dev/null
    prune_others "$base" "$image"
  fi
  built[$base]=$image
done

uv_image="$prefix/uv:$uv_version-$(recipe_digest uv "$uv_version")"
if ! have "$uv_image"; then
  echo "build-bases: $uv_image from the uv $uv_version wheel" >&2
  mkdir -p "$work/uv"
  # uv itself fetches its own wheel, from the index it is set up for on this host
  ${UV:-uv} pip install --quiet --no-deps --target "$work/uv-wheel" "uv==$uv_version"
  cp "$work/uv-wheel/bin/uv" "$work/uv/uv"
  chmod 0755 "$work/uv/uv"
  "$engine" build --quiet -f "$here/bases/uv.Containerfile" -t "$uv_image" "$work/uv" >/dev/null
  prune_others uv "$uv_image"
fi

lines="IMAGE_PYTHON=${built[python]}
IMAGE_UV=$uv_image
IMAGE_MOSQUITTO=${built[mosquitto]}
IMAGE_REDIS=${built[redis]%:*}
IMAGE_REDIS_TAG=${built[redis]##*:}
IMAGE_POSTGRES=${built[postgres]%:*}
IMAGE_POSTGRES_TAG=${built[postgres]##*:}"
[ -z "${BASES_ENV:-}" ] || echo "$lines" >"$BASES_ENV"
echo "$lines"
