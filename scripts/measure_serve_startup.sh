#!/usr/bin/env bash
# Seconds from `docker run -d IMAGE serve` to the first /ping 200, over RUNS runs.
# Usage: scripts/measure_serve_startup.sh IMAGE MODEL_DIR [RUNS]
set -euo pipefail
image="$1" model="$2" runs="${3:-3}"
for i in $(seq "$runs"); do
  port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  name="dogbreed-pingtime-$i"
  start=$(date +%s.%N)
  docker run -d --name "$name" -p "127.0.0.1:$port:8080" -v "$model:/opt/ml/model:ro" "$image" serve >/dev/null
  code=000
  for _ in $(seq 600); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/ping" || true)
    [[ "$code" == 200 ]] && break
    sleep 0.1
  done
  echo "run $i: /ping $code after $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s"
  docker rm -f "$name" >/dev/null
done
