#!/usr/bin/env bash
# Builds what model_repo/ needs but git does not hold (ONNX exports, trained heads), idempotently.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
set -a; source .venv/streamrec-paths.env; set +a
if [[ -f workers/model/build.py ]]; then
  PYTHONPATH="$ROOT" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$STREAMREC_MODEL_ENV/bin/python" -m workers.model.build
fi
