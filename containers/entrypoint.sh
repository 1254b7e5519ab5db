#!/bin/sh
# SageMaker runs `docker run IMAGE train` or `docker run IMAGE serve`: those single arguments
# become `dogbreed train` / `dogbreed serve`; any other command runs as given. `exec` keeps the
# signal path short: tini (PID 1) -> this process -> Python, so SIGTERM reaches the job.
set -e
if [ "$#" -eq 1 ]; then
  case "$1" in
    train | serve) exec dogbreed "$1" ;;
  esac
fi
if [ "$#" -eq 0 ]; then
  echo "usage: IMAGE train | IMAGE serve | IMAGE COMMAND [ARGS...]" >&2
  exit 2
fi
exec "$@"
