"""Score a voice-emotion version, as served (ONNX Runtime), on every clip of a corpus.

    .venv/bin/python scripts/voice_on_corpus.py VERSION DIR

Prints accuracy per clip (the mean of its windows' probabilities) and per 1.5 s window,
clean and through the G.711 line, and for a corpus that labels only some of the model's
classes also per clip over its own classes; with the mix of predicted classes. Used for
"voice-emotion/1 on Polish it never heard" (docs/TRAINING.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from emostream.models.repository import ModelRepository
from emostream.models.runner import Classifier, OnnxRunner
from emostream.paths import model_root
from emostream.training.voice_augment import telephone
from emostream.training.voice_data import CLASSES, CORPUS_CLASSES, keep_classes, scan
from emostream.training.voice_windows import all_windows, clip_mean, prepare


def main(version: str, folder: Path) -> None:
    repo = ModelRepository(model_root())
    card = repo.card("voice-emotion", version)
    clf = Classifier(card, OnnxRunner(repo.onnx_path("voice-emotion", version).read_bytes()))
    data = prepare(keep_classes(scan(folder)), 35.0, True)
    corpora = {c.corpus for c in data.clips}
    own = np.array([all(c in CORPUS_CLASSES[k] for k in corpora) for c in CLASSES])
    for cond, waves in (("clean", data.waves), ("telephone", [telephone(w) for w in data.waves])):
        w = all_windows(data, waves)
        probs = np.concatenate(
            [clf.predict_tensor(w.inputs[i : i + 256]) for i in range(0, len(w.inputs), 256)]
        )
        per_clip = clip_mean(probs, w.clip, len(data))
        pred = per_clip.argmax(1)
        mix = {CLASSES[k]: round(float((pred == k).mean()), 3) for k in range(len(CLASSES))}
        print(
            f"{card.ref} on {len(data)} clips of {', '.join(sorted(corpora))}, {cond}: "
            f"per clip {(pred == data.labels).mean():.4f}, "
            f"own classes {((per_clip * own).argmax(1) == data.labels).mean():.4f}, "
            f"per window {(probs.argmax(1) == w.labels).mean():.4f}; predicted {mix}"
        )


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], Path(sys.argv[2]))
