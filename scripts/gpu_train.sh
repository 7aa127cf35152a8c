#!/usr/bin/env bash
# The face recipe of issue 25 on a GPU: diverse teachers, then one student distilled from
# them, its int8 copy and its calibration; every fit resumes from its last.pt (run it again).
#
#   bash scripts/gpu_train.sh prepare   # here: FER2013 decoded once into shared/gpu-train/
#   bash scripts/gpu_train.sh run       # on the GPU machine, in a copy of the checkout
#
# FER2013 decoded is 71 MB, more than the device tool's carry limit (64 MiB), so it goes in
# the checkout's `shared/` folder (git-ignored), which the device tool copies as it is. With
# the device tool: carry `models/artefacts/face-emotion`, run `OUT=$OUT bash
# scripts/gpu_train.sh run`; the new versions and their runs come back under $OUT (models/,
# runs/, models/mlflow/), to copy into models/artefacts/ and promote here after checking.
# Voice is not here: its batches are cut, augmented and turned into log-mel by numpy on one
# CPU thread, so a GPU would wait on them; voice runs on the CPU (docs/TRAINING.md).
#
# Settings (environment): DEVICE (cuda), EPOCHS (teachers and student, 250), DATA (the
# shared data folder, for prepare), LIMIT (train faces, for a quick try on the CPU:
# DEVICE=cpu EPOCHS=1 LIMIT=512 bash scripts/gpu_train.sh run).
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=shared/gpu-train
DEVICE=${DEVICE:-cuda}
EPOCHS=${EPOCHS:-250}
OUT=${OUT:-$CACHE/out}
E="${EMOSTREAM:-.venv/bin/emostream}"
[ -x "$E" ] || E=emostream
limit=()
[ -n "${LIMIT:-}" ] && limit=(--limit "$LIMIT")

case "${1:-}" in
prepare)
  DATA=${DATA:-${EMOSTREAM_DATA:-../shared/data}}
  mkdir -p "$CACHE"
  "$E" train prepare --data "$DATA/fer2013" --out "$CACHE/fer2013.npz"
  ;;
run)
  # MLflow's store and artefacts then sit in $OUT/models/mlflow/ (a tracking URI of its own
  # would put the artefacts in ./mlruns of the checkout)
  export EMOSTREAM_MODEL_ROOT="$OUT/models"
  mkdir -p "$EMOSTREAM_MODEL_ROOT"
  cp -r models/artefacts/face-emotion "$EMOSTREAM_MODEL_ROOT/" 2>/dev/null || true
  data="$CACHE/fer2013.npz"
  common=(--device "$DEVICE" --set "optim.epochs=$EPOCHS" --set optim.patience=60 "${limit[@]}")
  # teachers: a wider VGG and the recipe at two seeds (face_net.py; width doubles per stage)
  for t in "w64 net.width=64 seed=10" "w48 net.width=48 seed=11" "w32 net.width=32 seed=12"; do
    set -- $t
    "$E" train face --data "$data" --run "$OUT/runs/teacher-$1" "${common[@]}" --set "$2" --set "$3"
  done
  teachers=$(ls "$EMOSTREAM_MODEL_ROOT/face-emotion" | sort -n | tail -3 | sed 's|^|face-emotion/|' | paste -sd, -)
  "$E" train face --data "$data" --run "$OUT/runs/student" "${common[@]}" \
    --set "distill.teachers=[$teachers]" --set optim.distill_weight=0.7 --set seed=13
  student=$(ls "$EMOSTREAM_MODEL_ROOT/face-emotion" | sort -n | tail -1)
  "$E" train face-quantize --version "$student" --data "$data" --run "$OUT/runs/student-int8"
  int8=$(ls "$EMOSTREAM_MODEL_ROOT/face-emotion" | sort -n | tail -1)
  "$E" train calibrate face-emotion --version "$int8" --data "$data" --run "$OUT/runs/student-calibrated"
  ;;
*)
  echo "usage: $0 prepare|run" >&2
  exit 2
  ;;
esac
