#!/usr/bin/env bash
# Make this Debian machine able to build and run the stack with Podman, from Debian's packages only:
#   - installs podman, podman-compose, runc, iptables (netavark's NAT), debootstrap (build-bases.sh) when missing;
#   - writes a containers.conf for this project at $CONTAINERS_CONF (default ~/.cache/a2a-mesh-containers/), which
#     the caller exports: runc (crun refuses hybrid cgroup hierarchies), cgroupfs and file events (no systemd),
#     and ulimits inside the machine's own (Podman's defaults are higher than some machines let a process raise).
# Idempotent; prints the containers.conf path.
set -euo pipefail
conf=${CONTAINERS_CONF:-${XDG_CACHE_HOME:-$HOME/.cache}/a2a-mesh-containers/containers.conf}

missing=()
for pair in podman:podman podman-compose:podman-compose runc:runc iptables:iptables debootstrap:debootstrap; do
  command -v "${pair%%:*}" >/dev/null || [ -x "/usr/sbin/${pair%%:*}" ] || missing+=("${pair#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-podman: installing ${missing[*]}" >&2
  sudo=$([ "$(id -u)" = 0 ] || echo sudo)
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" netavark aardvark-dns containernetworking-plugins uidmap >/dev/null
fi

# half of what this shell may have: the container's init sets them, and it may not reach the hard limit itself
nofile=$(( $(ulimit -Hn) / 2 ))
nproc=$(ulimit -Hu)
[ "$nproc" = unlimited ] && nproc=32768
nproc=$(( (nproc > 32768 ? 32768 : nproc) / 2 ))
mkdir -p "$(dirname "$conf")"
cat >"$conf.new" <<CONF
# written by infra/containers/setup-podman.sh for make container-test and make up COMPOSE=podman-compose
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]

[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
mv "$conf.new" "$conf"
echo "$conf"
