"""``EMOSTREAM_RESULTS__*``: when a face or voice result is a guess rather than a label.

A calibrated model's top probability ``p`` is right about ``p`` of the time (``emostream
train calibrate``; docs/TRAINING.md, "Calibration"), so under 0.5 its label is more likely
wrong than right. Such a result still carries its ``label``, ``confidence`` and ``scores``
(a client that knows nothing of this field keeps working) and says ``unsure: true``; the
demo page shows "unsure", a call's summary counts it apart from every class. Measured on
held-out data: face-emotion/3 after temperature scaling is right on 46 % of the FER2013 val
faces it scores 0.4-0.5 and on 55 % of those it scores 0.5-0.6.
"""

from __future__ import annotations

from pydantic import BaseModel, Field


class ResultsConfig(BaseModel):
    unsure_below: float = Field(
        default=0.5,
        ge=0,
        le=1,
        description="a face or voice result whose top probability is under this is sent "
        "with unsure: true (its label a guess: under 0.5 a calibrated model is more often "
        "wrong than right) and counted apart in call summaries; 0 = never unsure",
    )
