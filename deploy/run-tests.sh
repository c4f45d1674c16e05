#!/usr/bin/env bash
# The README's test command: installs what is missing, brings up the real local stack (Kafka + Triton),
# runs lint, type checks and every test tier, and tears the stack down even when something fails.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash deploy/bootstrap.sh
bash deploy/build-models.sh

STARTED_STACK=0
if ! .venv/bin/streamrec stack status >/dev/null 2>&1; then
  .venv/bin/streamrec stack up
  STARTED_STACK=1
fi
cleanup() {
  if [[ "$STARTED_STACK" == 1 ]]; then .venv/bin/streamrec stack down || true; fi
}
trap cleanup EXIT

echo "== lint and types"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy

echo "== tests"
set +e
.venv/bin/pytest -q -p no:cacheprovider -o console_output_style=classic "$@"
rc=$?
set -e
if [[ $rc == 5 ]]; then
  echo "no tests were collected: failing" >&2
  exit 1
fi
exit $rc
