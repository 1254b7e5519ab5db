#!/usr/bin/env bash
# Push a local image to Amazon ECR, tagged with the git revision (and a version).
#
# Usage: scripts/push_ecr.sh [--build] [--dry-run] [--keep N] [--region R] [--profile P]
#                            IMAGE REPO [VERSION]
#   IMAGE        local image, e.g. dogbreed-serve:latest
#   REPO         ECR repository name, e.g. dogbreed-serve (created if missing: scan on push,
#                immutable tags)
#   VERSION      optional extra tag, e.g. 1.2.0
#   --build      build IMAGE first with scripts/build_images.sh (dogbreed-train -> train,
#                dogbreed-serve -> serve, dogbreed-serve:gpu -> serve-gpu)
#   --dry-run    print the aws/docker commands instead of running them (no AWS call at all)
#   --keep N     lifecycle policy for a repository that has none: keep the newest N untagged
#                and the newest N git-* images, expire older ones (default 20). Images with a
#                release tag containing a dot (1.2.0) are exempt (up to 1000 of them).
#   --region R   AWS region (else AWS_REGION, AWS_DEFAULT_REGION, the CLI profile's)
#   --profile P  AWS CLI profile (else AWS_PROFILE)
#
# Tags: git-<12-char revision>, with -dirty-<UTC time> when tracked files have uncommitted
# changes (tags are immutable, so a dirty build never takes a clean revision's tag), and VERSION.
# stdout: one pushed image URI per line (git tag first); progress goes to stderr.
#
# Environment:
#   AWS_REGION / AWS_DEFAULT_REGION  region (default: the AWS CLI profile's)
#   AWS_PROFILE                      AWS CLI profile
#   AWS_ENDPOINT_URL                 other endpoint for the ECR/STS API calls (tests: moto)
#   ECR_REGISTRY_OVERRIDE            push to this registry host instead of
#                                    ACCOUNT.dkr.ecr.REGION.amazonaws.com (tests: a local one)
set -euo pipefail

log() { echo "push_ecr: $*" >&2; }
die() { log "error: $*"; exit 1; }
usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

build=0 dry=0 keep=20
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) build=1; shift ;;
    --dry-run) dry=1; shift ;;
    --keep) [[ $# -ge 2 ]] || usage; keep="$2"; shift 2 ;;
    --region) [[ $# -ge 2 ]] || usage; export AWS_REGION="$2"; shift 2 ;;
    --profile) [[ $# -ge 2 ]] || usage; export AWS_PROFILE="$2"; shift 2 ;;
    -h|--help) usage ;;
    -*) log "unknown option $1"; usage ;;
    *) break ;;
  esac
done
[[ $# -ge 2 && $# -le 3 ]] || usage
[[ "$keep" =~ ^[1-9][0-9]{0,3}$ ]] || { log "error: --keep takes a count from 1 to 9999, not $keep"; exit 2; }
# Dry run: print a command line (to the original stdout, fd 3) instead of running it.
exec 3>&1
run() { if ((dry)); then echo "+ $*" >&3; else "$@"; fi; }
image="$1" repo="$2" version="${3:-}"
[[ "$repo" =~ ^[a-z0-9]+([._/-][a-z0-9]+)*$ ]] || die "invalid repository name: $repo"
[[ -z "$version" || "$version" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] \
  || die "invalid version tag: $version"
command -v aws >/dev/null || die "the AWS CLI (aws) is not installed"
command -v docker >/dev/null || die "docker is not installed"
root="$(cd "$(dirname "$0")/.." && pwd)"

region="${AWS_REGION:-${AWS_DEFAULT_REGION:-$(aws configure get region 2>/dev/null || true)}}"
[[ -n "$region" ]] || die "no AWS region: set AWS_REGION"

if ((build)); then
  name="${image%%:*}" tag=latest
  [[ "$image" == *:* ]] && tag="${image##*:}"
  target="${name##*-}"
  # build_images.sh tags its GPU serving image `gpu` (IMAGE_TAG=latest) or `TAG-gpu`.
  if [[ "$tag" == gpu || "$tag" == *-gpu ]]; then
    target="$target-gpu"
    tag="${tag%-gpu}"
    [[ "$tag" == gpu ]] && tag=latest
  fi
  run env IMAGE_PREFIX="${name%-*}" IMAGE_TAG="$tag" "$root/scripts/build_images.sh" "$target" >&2
fi
((build && dry)) || docker image inspect "$image" >/dev/null 2>&1 \
  || die "no local image $image (build it or use --build)"

revision="$(git -C "$root" rev-parse --short=12 HEAD)" || die "not a git checkout: $root"
if [[ -n "$(git -C "$root" status --porcelain --untracked-files=no)" ]]; then
  revision="$revision-dirty-$(date -u +%Y%m%d%H%M%S)"
fi
tags=("git-$revision")
[[ -n "$version" ]] && tags+=("$version")

create=(aws ecr create-repository --region "$region" --repository-name "$repo"
  --image-scanning-configuration scanOnPush=true --image-tag-mutability IMMUTABLE)
# ECR applies the first rule (lowest priority number) whose tags match an image, and a lower
# rule never expires an image a higher one matched: rule 1 shields release tags (1.2.0) from the
# git-* rule, since every push carries a git-* tag.
expire() { # priority, description, count, selection fields
  printf '{"rulePriority":%s,"description":"%s","selection":{%s,"countType":"imageCountMoreThan","countNumber":%s},"action":{"type":"expire"}}' \
    "$1" "$2" "$4" "$3"
}
lifecycle="{\"rules\":[$(expire 1 "release tags (with a dot): the newest 1000" 1000 \
  '"tagStatus":"tagged","tagPatternList":["*.*"]'),$(expire 2 "untagged: the newest $keep" "$keep" \
  '"tagStatus":"untagged"'),$(expire 3 "git-* builds: the newest $keep" "$keep" \
  '"tagStatus":"tagged","tagPatternList":["git-*"]')]}"
put_lifecycle=(aws ecr put-lifecycle-policy --region "$region" --repository-name "$repo"
  --lifecycle-policy-text "$lifecycle")
if ((dry)); then
  run aws sts get-caller-identity --query Account --output text
  account=ACCOUNT_ID
else
  account="$(aws sts get-caller-identity --query Account --output text)" \
    || die "cannot read the AWS account (credentials?)"
fi
registry="${ECR_REGISTRY_OVERRIDE:-$account.dkr.ecr.$region.amazonaws.com}"

if ((dry)); then
  run aws ecr describe-repositories --region "$region" --repository-names "$repo" \
    "|| ${create[*]}"
  run aws ecr get-lifecycle-policy --region "$region" --repository-name "$repo" \
    "|| ${put_lifecycle[*]}"
  run aws ecr get-login-password --region "$region" \
    "| docker login --username AWS --password-stdin $registry"
else
  if ! error="$(aws ecr describe-repositories --region "$region" --repository-names "$repo" \
    2>&1 >/dev/null)"; then
    [[ "$error" == *RepositoryNotFoundException* ]] || die "$error"
    "${create[@]}" >/dev/null
    log "created repository $repo (scan on push, immutable tags)"
  fi
  # A policy already there (set by hand, or by an earlier run) is left as it is.
  if ! error="$(aws ecr get-lifecycle-policy --region "$region" --repository-name "$repo" \
    2>&1 >/dev/null)"; then
    [[ "$error" == *LifecyclePolicyNotFoundException* ]] || die "$error"
    "${put_lifecycle[@]}" >/dev/null
    log "lifecycle policy on $repo: keep the newest $keep untagged and $keep git-* images"
  fi
fi
if ((!dry)); then
  aws ecr get-login-password --region "$region" \
    | docker login --username AWS --password-stdin "$registry" >&2 \
    || die "docker login to $registry failed"
fi

for tag in "${tags[@]}"; do
  uri="$registry/$repo:$tag"
  run docker tag "$image" "$uri"
  ((dry)) || log "pushing $uri"
  run docker push "$uri" >&2 || die "push of $uri failed (an immutable tag cannot be pushed twice)"
  echo "$uri"
done
