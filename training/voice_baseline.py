"""The handcrafted-feature baseline: openSMILE eGeMAPS functionals + logistic regression.

88 functionals of pitch, loudness, jitter, shimmer, formants and spectral balance per clip
(the Geneva minimalistic set, made for affect), standardised, then a multinomial logistic
regression fitted on the training and validation speakers and scored on the same held-out
speakers as the network: what the network adds is the difference.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from emostream.extras import require
from emostream.stream.audio import SAMPLE_RATE


def egemaps(waves: Sequence[np.ndarray], progress: bool = True) -> np.ndarray:
    """(clips, 88) eGeMAPSv02 functionals."""
    require("opensmile", extra="train")
    import opensmile

    smile = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02,
        feature_level=opensmile.FeatureLevel.Functionals,
    )
    rows = [
        smile.process_signal(w, SAMPLE_RATE).to_numpy()[0]
        for w in tqdm(waves, desc="eGeMAPS", unit="clip", disable=not progress)
    ]
    return np.nan_to_num(np.stack(rows).astype(np.float64))


def fit_predict(
    train_x: np.ndarray, train_y: np.ndarray, tests: Sequence[np.ndarray], seed: int = 0
) -> list[np.ndarray]:
    """Probabilities (clips, classes present in train) for each test matrix."""
    require("sklearn", extra="train")
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(
        StandardScaler(), LogisticRegression(C=0.1, max_iter=5000, random_state=seed)
    )
    model.fit(train_x, train_y)
    return [np.asarray(model.predict_proba(t)) for t in tests]
