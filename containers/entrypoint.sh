#!/bin/sh
# SageMaker runs `docker run IMAGE train` or `docker run IMAGE serve`; EC2 and laptops add flags
# (`docker run --gpus all IMAGE train --epochs 5 ...`). A first argument `train` or `serve`
# becomes `dogbreed train ...` / `dogbreed serve ...`; any other command runs as given. `exec`
# keeps the signal path short: tini (PID 1) -> Python, so SIGTERM reaches the job.
set -e
if [ "$#" -eq 0 ]; then
  echo "usage: IMAGE train [FLAGS] | IMAGE serve [FLAGS] | IMAGE COMMAND [ARGS...]" >&2
  exit 2
fi
case "$1" in
  train | serve) exec dogbreed "$@" ;;
esac
exec "$@"
