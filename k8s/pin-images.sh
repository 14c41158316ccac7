#!/usr/bin/env bash
# Pin the prod overlay's images by digest, for a release: rewrites k8s/overlays/prod/release/kustomization.yaml with
# each image's registry and digest, and so drops the waivers that hold only while the images run by tag.
#   k8s/pin-images.sh NAME=REPOSITORY@sha256:DIGEST ...      (make k8s-pin-images IMAGES="...")
# NAME is an image as the manifests write it (a2a-mesh/coordinator, redis, postgres); every one must be given, so a
# release never mixes pinned and floating images. A digest is what your registry reports for the pushed tag, e.g.
#   docker buildx imagetools inspect registry.example.com/a2a-mesh/coordinator:0.1.0 --format '{{.Manifest.Digest}}'
# K8S_DIR (default: this script's folder) is the k8s/ tree to edit.
set -euo pipefail

k8s=${K8S_DIR:-$(cd "$(dirname "$0")" && pwd)}
release="$k8s/overlays/prod/release/kustomization.yaml"

# the images the manifests name (base and components), without their tags
mapfile -t names < <(grep -rhoE '^\s+image:\s*\S+' "$k8s/base" "$k8s/components" | awk '{print $2}' \
  | sed -E 's/@.*//; s#:[^:/]*$##' | sort -u)
[ "${#names[@]}" -gt 0 ] || { echo "pin-images: no image found under $k8s" >&2; exit 1; }

declare -A pinned=()
for arg in "$@"; do
  name=${arg%%=*}
  reference=${arg#*=}
  [[ "$arg" == *=* && "$reference" =~ ^[a-z0-9][a-z0-9._/:-]*@sha256:[0-9a-f]{64}$ ]] || {
    echo "pin-images: $arg is not NAME=REPOSITORY@sha256:<64 hex digits>" >&2; exit 2; }
  printf '%s\n' "${names[@]}" | grep -qxF "$name" || {
    echo "pin-images: no manifest runs the image $name (they run: ${names[*]})" >&2; exit 2; }
  [ -z "${pinned[$name]:-}" ] || { echo "pin-images: $name given twice" >&2; exit 2; }
  pinned[$name]=$reference
done
missing=()
for name in "${names[@]}"; do [ -n "${pinned[$name]:-}" ] || missing+=("$name"); done
[ "${#missing[@]}" -eq 0 ] || { echo "pin-images: no digest for ${missing[*]}: pin every image" >&2; exit 2; }

{
  echo "# The images of a release, pinned by digest: written by k8s/pin-images.sh (make k8s-pin-images) on $(date -u +%F)."
  echo "# Run it again for the next release; edit it only through that."
  echo "apiVersion: kustomize.config.k8s.io/v1alpha1"
  echo "kind: Component"
  echo
  echo "images:"
  for name in "${names[@]}"; do
    reference=${pinned[$name]}
    echo "  - name: $name"
    echo "    newName: ${reference%@*}"
    echo "    digest: ${reference#*@}"
  done
} > "$release.new"
mv "$release.new" "$release"
echo "pinned ${#names[@]} images in ${release#"$k8s"/}" >&2
