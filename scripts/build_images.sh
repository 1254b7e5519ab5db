#!/usr/bin/env bash
# Build the dogbreed images from the repository root.
#
# Usage: scripts/build_images.sh [train] [serve] [serve-gpu]   (default: train serve)
# Environment:
#   BASE_IMAGE            base image (default python:3.11-slim-bookworm; offline hosts use
#                         dogbreed-base:bookworm-py311 from scripts/build_base_image.sh)
#   IMAGE_PREFIX          tag prefix (default dogbreed): PREFIX-train, PREFIX-serve, PREFIX-serve:gpu
#   IMAGE_TAG             tag (default latest)
#   PIP_INDEX             another package index for pip inside the build (default: PyPI)
#   PIP_EXTRA_INDEX       an extra package index (default: none)
#   PRETRAINED_BACKBONES  torchvision backbones whose ImageNet weights are baked into the train
#                         image, e.g. "resnet50" (default: none)
set -euo pipefail
cd "$(dirname "$0")/.."

base="${BASE_IMAGE:-python:3.11-slim-bookworm}"
prefix="${IMAGE_PREFIX:-dogbreed}"
tag="${IMAGE_TAG:-latest}"
targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(train serve)

build() {
  local image="$1" dockerfile="$2"
  shift 2
  echo "== building $image from $dockerfile on $base"
  local start=$SECONDS
  local args=(--network host -f "$dockerfile"
    --build-arg BASE_IMAGE="$base"
    --build-arg PIP_INDEX="${PIP_INDEX:-}"
    --build-arg PIP_EXTRA_INDEX="${PIP_EXTRA_INDEX:-}"
    "$@")
  # --network host: pip inside the build uses the host's network path (proxy, local mirror).
  # The build stage (the venv, GBs) gets a tag of its own, IMAGE-build:TAG: tagged, it stays
  # the cache of the next build when prune_old_stages removes what earlier builds left.
  docker build "${args[@]}" --target build -t "${image%:*}-build:${image##*:}" .
  docker build "${args[@]}" -t "$image" .
  echo "== built $image in $((SECONDS - start)) s: $(docker image inspect -f '{{.Size}}' "$image" \
    | awk '{printf "%.2f GB", $1 / 1e9}')"
}

# Every rebuild leaves the previous images of each stage untagged, and a requirements change
# leaves a whole old venv (~6 GB for train): remove the untagged ones our Dockerfiles made
# (their stages carry the org.dogbreed.stage label). Images in use by a container stay.
prune_old_stages() {
  docker image prune --force --filter label=org.dogbreed.stage | tail -n 1
}

for target in "${targets[@]}"; do
  case "$target" in
    train)
      build "$prefix-train:$tag" containers/train/Dockerfile \
        --build-arg PRETRAINED_BACKBONES="${PRETRAINED_BACKBONES:-}" ;;
    serve) build "$prefix-serve:$tag" containers/serve/Dockerfile --build-arg FLAVOR=cpu ;;
    serve-gpu)
      gpu_tag="gpu"
      [[ "$tag" == latest ]] || gpu_tag="$tag-gpu"
      build "$prefix-serve:$gpu_tag" containers/serve/Dockerfile --build-arg FLAVOR=gpu ;;
    *) echo "unknown image: $target (train, serve, serve-gpu)" >&2; exit 2 ;;
  esac
done
prune_old_stages
