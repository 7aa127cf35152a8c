#!/usr/bin/env bash
# The worker benchmark (bench/worker.py) on a GPU with onnxruntime-gpu.
#
# Two steps, because a lent GPU machine starts bare and reaches nothing outside itself:
#
#   bash scripts/gpu_worker_bench.sh prepare   # here, with the network: wheels, data subset
#   bash scripts/gpu_worker_bench.sh run       # on the GPU machine, in a copy of the checkout
#
# `prepare` downloads, into .whl/ (git-ignored), onnxruntime-gpu and the few pure-Python
# packages the bench imports that a CUDA image with PyTorch usually lacks; it copies the
# real inputs the bench needs (256 FER2013 val faces, woman2.mp4 and the photos) from the
# shared data into .cache/bench-data/ (git-ignored; the shared data itself never travels).
# The models come from `emostream models pull` (models/artefacts/*/<version>/, git-ignored).
# With the device tool, carry these paths and run step two:
#
#   carry:   .whl  .cache/bench-data  models/artefacts/face-emotion  models/artefacts/face-detector
#   command: bash scripts/gpu_worker_bench.sh run
#
# then copy the fetched $OUT/BENCHMARKS.md section and $OUT/bench-worker-gpu.png into docs/.
# Mind the device tool's carry limit (64 MiB in all): the onnxruntime-gpu wheel alone is
# larger, so where that limit applies, step two only works if the machine already has a
# CUDA build of ONNX Runtime (set ORT_SITE to the folder that holds it) or can reach an
# index (`run` falls back to `pip install` from the index when .whl/ is absent).
#
# The CUDA major of the onnxruntime-gpu wheel must match the machine's CUDA libraries (PyPI's
# default onnxruntime-gpu is built for CUDA 12 and cuDNN 9; pick another build with
# ORT_GPU_SPEC). `run` refuses to report figures when the CUDA provider does not load,
# rather than publish CPU numbers under a GPU heading.
#
# Settings (environment):
#   ORT_GPU_SPEC  pip requirement for ONNX Runtime (default: onnxruntime-gpu)
#   PY_VERSION    target Python of the GPU machine for `prepare` (default: 3.12)
#   PYTHON        interpreter on the GPU machine (default: python3)
#   BATCHES       batch list (default: 1,2,4,8,16,32,64,128,256)
#   REPEATS       timed calls per batch size (default: 50)
#   OUT           where `run` writes BENCHMARKS.md and the chart (the device tool sets it;
#                 else build/gpu-bench)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
wheels=$root/.whl
bench_data=$root/.cache/bench-data
ort_spec=${ORT_GPU_SPEC:-onnxruntime-gpu}
# What `python -m emostream.bench.worker` imports beyond numpy, OpenCV, matplotlib, tqdm,
# prometheus-client and ONNX Runtime's own dependencies (all in the usual CUDA images).
extra=(pydantic pydantic-core pydantic-settings python-dotenv annotated-types typing-inspection)

prepare() {
  local py=${PREP_PYTHON:-$root/.venv/bin/python} pyv=${PY_VERSION:-3.12}
  mkdir -p "$wheels"
  "$py" -m pip download --dest "$wheels" --no-deps --only-binary=:all: \
    --python-version "$pyv" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    "$ort_spec" "${extra[@]}"
  # Real inputs only: FER2013 val faces spread over the classes, the video and photos.
  local data
  data=$("$py" -c 'from emostream.paths import data_root; print(data_root() or "")')
  [[ -n $data && -d $data/fer2013/val && -d $data/media ]] || {
    echo "no shared data (fer2013/val, media): set EMOSTREAM_DATA" >&2
    exit 1
  }
  rm -rf "$bench_data" && mkdir -p "$bench_data/media"
  cp "$data"/media/{woman2.mp4,justin.jpg,obama.jpg,two_people.jpg} "$bench_data/media/"
  "$py" - "$data/fer2013/val" "$bench_data/fer2013/val" <<'PY'
import shutil, sys
from pathlib import Path
src, dst = Path(sys.argv[1]), Path(sys.argv[2])
every = sorted(src.glob("*/*.jpg"))
for f in every[:: max(1, len(every) // 256)][:256]:  # the same picks as the bench makes
    (dst / f.parent.name).mkdir(parents=True, exist_ok=True)
    shutil.copy2(f, dst / f.parent.name / f.name)
PY
  for m in face-emotion face-detector; do
    [[ -f models/artefacts/$m/aliases.json ]] || {
      echo "models/artefacts/$m missing: run .venv/bin/emostream models pull" >&2
      exit 1
    }
  done
  du -sh "$wheels" "$bench_data" models/artefacts/face-emotion models/artefacts/face-detector
  echo "carry: .whl .cache/bench-data models/artefacts/face-emotion models/artefacts/face-detector"
}

run() {
  local py=${PYTHON:-python3} out=${OUT:-$root/build/gpu-bench}
  local site=${ORT_SITE:-$root/build/gpu-site}
  mkdir -p "$out" "$site"
  # Into a folder put first on PYTHONPATH, so this onnxruntime-gpu shadows any CPU
  # onnxruntime of the image without touching the image's environment.
  if [[ -z ${ORT_SITE:-} ]]; then
    if compgen -G "$wheels/*.whl" >/dev/null; then
      "$py" -m pip install --no-index --find-links "$wheels" --no-deps --target "$site" \
        "$ort_spec" "${extra[@]}"
    else
      "$py" -m pip install --no-deps --target "$site" "$ort_spec" "${extra[@]}"
    fi
    # emostream itself (no dependencies: the bench needs none beyond the above)
    "$py" -m pip install --no-index --no-deps --no-build-isolation --target "$site" "$root"
  fi
  export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
  # CUDA and cuDNN from the nvidia-* wheels, where the image has them as pip packages.
  local libs
  libs=$("$py" - <<'PY'
import glob, os, sys
dirs = set()
for p in sys.path:
    dirs.update(glob.glob(os.path.join(p, "nvidia", "*", "lib")))
print(":".join(sorted(dirs)))
PY
)
  export LD_LIBRARY_PATH=$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  export EMOSTREAM_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider
  export EMOSTREAM_MODEL_ROOT=$root/models/artefacts EMOSTREAM_DATA=$bench_data MPLBACKEND=Agg
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  # ONNX Runtime falls back to CPU with only a log line when CUDA libraries do not load.
  "$py" - <<'PY'
import sys
import onnxruntime as ort
from emostream.models.repository import ModelRepository
from emostream.paths import model_root

repo = ModelRepository(model_root())
path = repo.onnx_path("face-emotion", repo.resolve("face-emotion", "production"))
got = ort.InferenceSession(str(path), providers=["CUDAExecutionProvider"]).get_providers()
print("onnxruntime", ort.__version__, ort.get_device(), got)
if got[0] != "CUDAExecutionProvider":
    sys.exit("CUDAExecutionProvider did not load: check ORT_GPU_SPEC against the CUDA libraries")
PY
  [[ -f $out/BENCHMARKS.md ]] || cp docs/BENCHMARKS.md "$out/BENCHMARKS.md"
  "$py" -m emostream.bench.worker \
    --batches "${BATCHES:-1,2,4,8,16,32,64,128,256}" --repeats "${REPEATS:-50}" \
    --out "$out/BENCHMARKS.md" --chart "$out/bench-worker-gpu.png" \
    --section "Worker on GPU (emostream bench worker)"
}

case ${1:-} in
  prepare) prepare ;;
  run) run ;;
  *)
    sed -n '2,37p' "$0"
    exit 2
    ;;
esac
