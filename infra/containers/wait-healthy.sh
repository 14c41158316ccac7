#!/usr/bin/env bash
# Wait until every container of a Compose project is healthy (running, for one without a health check), for the
# engines that cannot wait by themselves (podman-compose has no `up --wait`). Bounded: fails after TIMEOUT seconds,
# or at once when a container has exited, printing each container's state and the last log lines of the bad ones.
# A container left created but not started (podman-compose goes on when a start fails) is started again.
#   wait-healthy.sh ENGINE PROJECT [TIMEOUT_SECONDS] [SERVICE...]      ENGINE: docker or podman
# Podman without systemd runs no health check on its own schedule: here each pending check is run explicitly
# (`podman healthcheck run`), which also records the result where `podman ps` and `inspect` show it.
set -euo pipefail
engine=${1:?usage: wait-healthy.sh ENGINE PROJECT [TIMEOUT_SECONDS] [SERVICE...]}
project=${2:?usage: wait-healthy.sh ENGINE PROJECT [TIMEOUT_SECONDS] [SERVICE...]}
timeout=${3:-300}
shift $(( $# < 3 ? $# : 3 ))
services=("$@")
deadline=$(( SECONDS + timeout ))
errors=$(mktemp)
trap 'rm -f "$errors"' EXIT

containers() {
  local filters=(--filter "label=com.docker.compose.project=$project")
  if [ ${#services[@]} -eq 0 ]; then
    "$engine" ps -a "${filters[@]}" --format '{{.Names}}'
  else
    for service in "${services[@]}"; do
      "$engine" ps -a "${filters[@]}" --filter "label=com.docker.compose.service=$service" --format '{{.Names}}'
    done
  fi
}

# healthy, starting, unhealthy, or the container's state when it has no health check (running, exited, ...)
state_of() {
  "$engine" inspect --format '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}' "$1" 2>/dev/null \
    || echo missing
}

report() {
  for name in $(containers); do printf '  %-40s %s\n' "$name" "$(state_of "$name")" >&2; done
  for name in "$@"; do echo "--- last log lines of $name" >&2; "$engine" logs --tail 20 "$name" >&2 2>&1 || true; done
}

while :; do
  mapfile -t names < <(containers)
  if [ ${#names[@]} -eq 0 ]; then
    echo "wait-healthy: no container of project $project${services:+ (${services[*]})}" >&2
    exit 1
  fi
  pending=() dead=()
  for name in "${names[@]}"; do
    read -r status health <<<"$(state_of "$name")"
    case "$status" in
      running) ;;
      restarting|configured|initialized) pending+=("$name"); continue ;;
      created)
        # created but not started: podman-compose's start failed (say, a port taken for a moment); start it again
        echo "wait-healthy: starting $name, created but not running" >&2
        "$engine" start "$name" >/dev/null 2>"$errors" || cat "$errors" >&2
        pending+=("$name"); continue ;;
      *) dead+=("$name"); continue ;;
    esac
    [ -z "${health:-}" ] || [ "$health" = healthy ] && continue
    if [ "$engine" = podman ] && podman healthcheck run "$name" >/dev/null 2>&1; then
      continue
    fi
    pending+=("$name")
  done
  if [ ${#dead[@]} -gt 0 ]; then
    echo "wait-healthy: stopped: ${dead[*]}" >&2
    report "${dead[@]}"
    exit 1
  fi
  if [ ${#pending[@]} -eq 0 ]; then
    echo "wait-healthy: all ${#names[@]} containers of $project are healthy" >&2
    exit 0
  fi
  if [ "$SECONDS" -ge "$deadline" ]; then
    echo "wait-healthy: not healthy after ${timeout}s: ${pending[*]}" >&2
    report "${pending[@]}"
    exit 1
  fi
  sleep 2
done
