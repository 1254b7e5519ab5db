#!/usr/bin/env bash
# Deploy the Lambda client: a thin wrapper, every flag is `dogbreed lambda deploy`'s.
#   scripts/deploy_lambda.sh --function-name dogbreed-client --endpoint-name dogbreed \
#       --reserved-concurrency 2 --provisioned-concurrency 2 --function-url [--dry-run]
set -euo pipefail
exec dogbreed lambda deploy "$@"
