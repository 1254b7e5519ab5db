#!/usr/bin/env bash
# The main job on the built-in sample data (README): set the machine up (scripts/setup.sh), then
# `docker-compose up`: generate sample data into ./local/data (when absent), train in the
# training image with SageMaker's /opt/ml layout, serve the model on 127.0.0.1:8080, and ask it
# for the top 3 breeds of a test image. The server keeps running: `docker-compose down` stops it.
# DOGBREED_SKIP_SETUP=1 skips the set-up; DOGBREED_PORT / DOGBREED_LOCAL_DIR as in compose.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${DOGBREED_SKIP_SETUP:-0}" != 1 ]]; then
  scripts/setup.sh
fi
compose=(docker-compose)
command -v docker-compose >/dev/null || compose=(docker compose)
port="${DOGBREED_PORT:-8080}"
local_dir="${DOGBREED_LOCAL_DIR:-./local}"

"${compose[@]}" up -d serve   # starts data and train first (depends_on), then serve
echo "== waiting for http://127.0.0.1:$port/ping (training runs first)"
for _ in $(seq 180); do
  curl -fsS "http://127.0.0.1:$port/ping" >/dev/null 2>&1 && break
  # docker inspect, not `compose ps`: compose v2 words and hides exited containers differently.
  train_id="$("${compose[@]}" ps -q train 2>/dev/null || true)"
  if [[ -n "$train_id" ]] && docker inspect -f '{{.State.Status}} {{.State.ExitCode}}' \
    "$train_id" | grep -q "^exited [1-9]"; then
    echo "training failed:" >&2
    cat "$local_dir/output/failure" >&2 || true
    exit 1
  fi
  sleep 5
done
curl -fsS "http://127.0.0.1:$port/ping" >/dev/null || { "${compose[@]}" logs --tail 50; exit 1; }
grep -h "test_loss=" <("${compose[@]}" logs train) || true
image="$(find "$local_dir/data/test" -name '*.jpg' -print -quit)"  # no pipe: pipefail-safe
echo "== POST /invocations with $image"
curl -fsS -X POST "http://127.0.0.1:$port/invocations" \
  -H 'Content-Type: image/jpeg' -H 'X-Amzn-SageMaker-Custom-Attributes: top_k=3' \
  --data-binary @"$image"
echo
echo "== serving on http://127.0.0.1:$port (stop with: ${compose[*]} down)"
echo "== try it in a browser (drop a photo): http://127.0.0.1:$port/"
