#!/usr/bin/env bash
# The project's test command: the whole suite, container tests included (they need Docker and
# the images from scripts/build_images.sh; missing images are built on first use).
# Extra arguments go to pytest, e.g. scripts/test.sh -m "not docker" -x
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${VIRTUAL_ENV:-}" && -f .venv/bin/activate ]]; then
  # shellcheck source=/dev/null
  . .venv/bin/activate
fi
exec python -m pytest "$@"
