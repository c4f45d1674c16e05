#!/usr/bin/env bash
# Builds the GPU model repository (deploy/gpu/model_repo/) from the ONNX export: a TensorRT plan of
# the MiniLM encoder for `ranker_encoder`, plus the tokenizer and head the python models read.
#
#   deploy/tensorrt/build_plan.sh [--int8 --calib FILE] [--onnx PATH] [--version 1]
#
# Run on the GPU host that will serve it: a plan is specific to the GPU model and the TensorRT
# version, so build it with the TensorRT that ships in the serving image's release (24.10:
# TensorRT 10.5). Uses `trtexec` from PATH, or else the NGC TensorRT container of that release.
# Precision: fp16 (default). --int8 adds int8 kernels; it needs a calibration cache (--calib)
# made from real token batches (e.g. with Polygraphy over a few thousand user/item texts) - without
# one trtexec uses placeholder scales, fine for timing and wrong for scores, so the script refuses.
#
# Optimisation profile (token ids and mask share it; the export's axes 0 and 1 are both dynamic):
#   min 1x8, opt 64x64, max 256x64 = [batch x seq]. max batch = max_batch_size in
#   ranker_encoder/config.pbtxt, seq = max_seq_len of the python models, which pad every request
#   to that width so that requests of the same shape batch together in Triton.
# tests/unit/test_gpu_repository.py checks these names and shapes against the configs.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

VERSION=1
ONNX="model_repo/ranker/$VERSION/encoder.onnx"
INT8=0
CALIB=""
TRT_IMAGE="${TRT_IMAGE:-nvcr.io/nvidia/tensorrt:24.10-py3}"
while [[ $# -gt 0 ]]; do
  case "$1" in
    --int8) INT8=1; shift ;;
    --calib) CALIB="$2"; shift 2 ;;
    --onnx) ONNX="$2"; shift 2 ;;
    --version) VERSION="$2"; shift 2 ;;
    -h | --help) sed -n 2,19p "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

# The ONNX export's names (workers/model/encoder.py: export_onnx) and the profile.
INPUT_IDS=input_ids
ATTENTION_MASK=attention_mask
OUTPUT=embedding
MIN_SHAPE=1x8
OPT_SHAPE=64x64
MAX_SHAPE=256x64

GPU_REPO="deploy/gpu/model_repo"
PLAN="$GPU_REPO/ranker_encoder/$VERSION/model.plan"
SOURCE="model_repo/ranker/$VERSION"

if [[ ! -f "$ONNX" ]]; then
  echo "$ONNX missing: run deploy/build-models.sh (python -m workers.model.build) first" >&2
  exit 1
fi
if [[ "$INT8" == 1 && -z "$CALIB" ]]; then
  echo "--int8 needs --calib CACHE (a calibration cache from real token batches); see the header" >&2
  exit 2
fi

args=(
  "--onnx=$ONNX"
  "--saveEngine=$PLAN"
  --fp16
  "--minShapes=$INPUT_IDS:$MIN_SHAPE,$ATTENTION_MASK:$MIN_SHAPE"
  "--optShapes=$INPUT_IDS:$OPT_SHAPE,$ATTENTION_MASK:$OPT_SHAPE"
  "--maxShapes=$INPUT_IDS:$MAX_SHAPE,$ATTENTION_MASK:$MAX_SHAPE"
  --memPoolSize=workspace:4096
  --skipInference
)
if [[ "$INT8" == 1 ]]; then
  args+=(--int8 "--calib=$CALIB")
fi

mkdir -p "$(dirname "$PLAN")" "$GPU_REPO/ranker/$VERSION" "$GPU_REPO/encoder/$VERSION"
if command -v trtexec > /dev/null; then
  trtexec "${args[@]}"
else
  docker run --rm --gpus all -v "$ROOT:/work" -w /work "$TRT_IMAGE" trtexec "${args[@]}"
fi

# What the python models read besides their code (git-ignored in the GPU repository).
cp "$SOURCE/tokenizer.json" "$GPU_REPO/ranker/$VERSION/tokenizer.json"
cp "$SOURCE/head.json" "$GPU_REPO/ranker/$VERSION/head.json"
cp "$SOURCE/tokenizer.json" "$GPU_REPO/encoder/$VERSION/tokenizer.json"
echo "built $PLAN (fp16$([[ "$INT8" == 1 ]] && echo "+int8")) from $ONNX; output $OUTPUT"
