#!/usr/bin/env bash
# The Kubernetes Secrets the manifests mount, made from the files `make certs` writes into infra/broker-certs and
# printed as YAML on stdout (nothing is written to disk):
#   make k8s-secrets                                            # make certs, then this | kubectl apply
#   k8s/secrets.sh | kubectl apply --server-side -f -           # the same by hand
#   PKI_DIR=/path/to/your/pki k8s/secrets.sh | kubectl apply --server-side -f -     # your own CA (docs/security.md)
# kustomize cannot read files outside k8s/, and the keys must never be copied into the repository, so the Secrets
# are made by `kubectl create secret --dry-run=client -o yaml` straight from the PKI folder: the same CA,
# certificates, passwords and dynamic-security roles as `make dev` and Compose. It makes exactly the Secrets the
# workloads of k8s/base mount (their `secretName`s), so the manifests and this script cannot disagree:
#   broker-certs          ca.crt broker.crt broker.key dynamic-security.json   the broker: TLS, and the plugin's seed
#   mqtt-<name>           ca.crt client.crt client.key password                the identity {org}/{unit}/<name>
#                                                                              (mqtt-health: the identity `health`)
#   mqtt-<agent>          ca.crt client.crt client.key enroll.json             an agent's pool (or a service whose pods
#                                                                              enroll): the certificate its pods
#                                                                              share and its role template (each pod
#                                                                              enrolls its own identity as it starts)
#   mesh-enroller         ca.crt client.crt client.key password                what the pods' init containers enroll as
#   coordinator-api-keys  api-keys card-signing.key                            the keys HTTP clients present, and the
#                                                                              one the served agent cards are signed with
#   internal-<server>     ca.crt server.crt server.key                         the registry's or task store's HTTPS:
#                                                                              servers/<server> (a2amesh.internal)
#   internal-<client>     ca.crt client.crt client.key                         a client of those APIs without a broker
#                                                                              identity (the console)
#   redis-users           users.acl health.password                            Redis: its ACL file (the default user
#                                                                              off, digests only) and the password of
#                                                                              `health`, its readiness probe's user
#   redis-<user>          password                                             a Redis client's ACL user (registry,
#                                                                              coordinator: topology.yaml redis_users)
# {org} and {unit} are MESH_ORG and MESH_UNIT of k8s/base/mesh.env. Environment: PKI_DIR (default
# infra/broker-certs), NAMESPACE (default a2a-mesh). tests/test_deploy_artifacts.py runs it on a throwaway PKI.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pki=${PKI_DIR:-$root/infra/broker-certs}
namespace=${NAMESPACE:-a2a-mesh}

setting() { sed -n "s/^$1=//p" "$root/k8s/base/mesh.env"; }
org=$(setting MESH_ORG)
unit=$(setting MESH_UNIT)

fail() { echo "k8s/secrets.sh: $*" >&2; exit 1; }

# secret NAME KEY=FILE...: one Secret, each key holding one file of the PKI
secret() {
  local name=$1 pair
  shift
  local args=()
  for pair in "$@"; do
    [ -f "${pair#*=}" ] || fail "${pair#*=} is missing: run \`make certs\` first (or point PKI_DIR at your PKI)"
    args+=("--from-file=$pair")
  done
  echo "---"
  kubectl create secret generic "$name" --namespace "$namespace" "${args[@]}" --dry-run=client -o yaml
}

rendered=$(kubectl kustomize "$root/k8s/base")
names=$(sed -n 's/^ *secretName: *//p' <<<"$rendered" | sort -u)
[ -n "$names" ] || fail "no workload of k8s/base mounts a Secret"

for name in $names; do
  case $name in
    broker-certs)
      secret "$name" ca.crt="$pki/ca.crt" broker.crt="$pki/broker.crt" broker.key="$pki/broker.key" \
        dynamic-security.json="$pki/dynamic-security.json"
      ;;
    mesh-enroller)
      stem=$pki/clients/mesh-enroller
      secret "$name" ca.crt="$pki/ca.crt" client.crt="$stem.crt" client.key="$stem.key" password="$stem.password"
      ;;
    coordinator-api-keys)
      secret "$name" api-keys="$pki/coordinator-api-keys" card-signing.key="$pki/coordinator-card-signing.key"
      ;;
    internal-*)
      # the internal APIs' mutual TLS: a server's certificate (servers/<name>, SANs its Service names), or the
      # client certificate of a process that calls them without a broker identity
      id=${name#internal-}
      if [ -f "$pki/servers/$id.crt" ]; then
        secret "$name" ca.crt="$pki/ca.crt" server.crt="$pki/servers/$id.crt" server.key="$pki/servers/$id.key"
      else
        stem=$pki/clients/$org/$unit/$id
        secret "$name" ca.crt="$pki/ca.crt" client.crt="$stem.crt" client.key="$stem.key"
      fi
      ;;
    redis-users)
      secret "$name" users.acl="$pki/redis/users.acl" health.password="$pki/redis/health.password"
      ;;
    redis-*)
      secret "$name" password="$pki/redis/${name#redis-}.password"
      ;;
    mqtt-*)
      id=${name#mqtt-}
      stem=$pki/clients/$org/$unit/$id
      # an agent's pool (k8s/base/agents/<agent>.yaml) or a service whose pods enroll (coordinator, workflows,
      # taskstore, registry: devstack.pki.SERVICE_REPLICAS): no password, its pods enroll their own identities
      if [ -f "$pki/enroll/$id.json" ]; then
        secret "$name" ca.crt="$pki/ca.crt" client.crt="$stem.crt" client.key="$stem.key" \
          enroll.json="$pki/enroll/$id.json"
        continue
      fi
      # identities that belong to no org/unit (the health probe) live directly in clients/
      [ -f "$stem.crt" ] || [ ! -f "$pki/clients/$id.crt" ] || stem=$pki/clients/$id
      secret "$name" ca.crt="$pki/ca.crt" client.crt="$stem.crt" client.key="$stem.key" password="$stem.password"
      ;;
    *)
      fail "a workload mounts the Secret $name, and this script does not know what goes in it"
      ;;
  esac
done

# PostgreSQL's server certificate (the prod overlay's components/postgres mounts it; `make certs` issues it, SANs
# postgres and postgres.<namespace>.svc): the task store connects with sslmode=verify-full against the mesh CA
secret postgres-tls tls.crt="$pki/servers/postgres.crt" tls.key="$pki/servers/postgres.key"
