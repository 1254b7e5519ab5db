#!/usr/bin/env bash
# The project's test command (README; .ci/run calls it): set the machine up (scripts/setup.sh:
# Docker, Java, .venv, the base image and both images, rebuilt from the current code), then run
# the whole test suite, container tests included. Extra arguments go to pytest, e.g.
#   scripts/test.sh -m "not docker" -x
# DOGBREED_SKIP_SETUP=1 skips the set-up (a provisioned machine, images already current).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${DOGBREED_SKIP_SETUP:-0}" != 1 ]]; then
  scripts/setup.sh
fi
. .venv/bin/activate
exec python -m pytest "$@"
