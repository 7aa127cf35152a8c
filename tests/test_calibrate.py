"""``emostream train calibrate``: temperature scaling in the graph, fitted on held-out data.

The graph edit and the fit on tiny graphs and synthetic logits; the command end to end on a
synthetic face version whose labels were drawn at a known temperature (a private model
root, a prepared .npz: a few seconds); the shipped voice model on a few real clips when the
shared data is there.
"""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from typer.testing import CliRunner

pytest.importorskip("mlflow")
pytest.importorskip("onnx")
pytest.importorskip("torch")

from onnx import TensorProto, helper, numpy_helper

from emostream.cli import app
from emostream.models.card import FACE_EMOTION_USE, ImageInput, ModelCard, Output, Source
from emostream.models.check import load_checked
from emostream.models.repository import BUNDLED_ROOT, ModelRepository
from emostream.models.runner import softmax
from emostream.training import face_data
from emostream.training.face_config import TrainConfig
from emostream.training.face_data import Split
from emostream.training.face_trainer import holdout_split
from emostream.training.fer2013 import CLASSES
from emostream.training.mlflow_store import VERSION_TAG, Tracking
from emostream.training.onnx_build import finish_model
from emostream.training.onnx_temperature import (
    TEMPERATURE,
    temperature_of,
    with_logits,
    with_temperature,
)
from emostream.training.temperature import fit_temperature, from_probabilities, nll

FACE = "face-emotion"
PIXELS = 48 * 48
runner = CliRunner()


def _two_view_graph(w: np.ndarray, b: np.ndarray) -> bytes:
    """(N, 1, 48, 48) -> the mean of two softmaxes of linear views (weights ``w[v]``,
    biases ``b[v]``): the shape of the face graph's tail, mirror average included."""
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1)]
    inits = [numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    for v in range(2):
        inits += [numpy_helper.from_array(w[v], f"w{v}"), numpy_helper.from_array(b[v], f"b{v}")]
        nodes += [
            helper.make_node("Gemm", ["flat", f"w{v}", f"b{v}"], [f"z{v}"], transB=1),
            helper.make_node("Softmax", [f"z{v}"], [f"p{v}"], axis=1),
        ]
    nodes += [
        helper.make_node("Add", ["p0", "p1"], ["sum"]),
        helper.make_node("Mul", ["sum", "half"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two-views",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 48, 48])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", len(CLASSES)])],
        inits,
    )
    out: bytes = finish_model(graph, "test").SerializeToString()
    return out


def _weights(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.12, (2, len(CLASSES), PIXELS)).astype(np.float32)
    return w, rng.normal(0, 0.5, (2, len(CLASSES))).astype(np.float32)


def _run(graph: bytes, x: np.ndarray) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    return [np.asarray(o) for o in session.run(None, {"input": x})]


def _view_logits(w: np.ndarray, b: np.ndarray, images: np.ndarray) -> np.ndarray:
    """(N, 2, classes) of the graph above, in numpy, for uint8 faces (pixel / 255)."""
    flat = images.reshape(len(images), -1).astype(np.float64) / 255.0
    return np.stack([flat @ w[v].T.astype(np.float64) + b[v] for v in range(2)], axis=1)


def _draw(logits: np.ndarray, temperature: float, seed: int) -> np.ndarray:
    """Labels drawn from the mean of the views' ``softmax(z / T)``: a model whose honest
    temperature is ``T``."""
    n, views, k = logits.shape
    p = softmax(logits.reshape(n * views, k) / temperature).reshape(n, views, k).mean(axis=1)
    u = np.random.default_rng(seed).random((n, 1))
    return np.minimum((p.cumsum(axis=1) < u).sum(axis=1), k - 1).astype(np.int64)


# -- the graph edit ---------------------------------------------------------------------------


def test_temperature_one_gives_the_parents_outputs_exactly() -> None:
    graph = _two_view_graph(*_weights(0))
    x = np.random.default_rng(1).random((16, 1, 48, 48), np.float32)
    assert np.array_equal(_run(with_temperature(graph, 1.0), x)[0], _run(graph, x)[0])
    for name, version in (("face-emotion", "3"), ("voice-emotion", "1")):  # the shipped ones
        shipped = BUNDLED_ROOT / name / version / "model.onnx"
        if not shipped.is_file():
            continue
        real = shipped.read_bytes()
        session = onnxruntime.InferenceSession(real, providers=["CPUExecutionProvider"])
        shape = [d if isinstance(d, int) else 4 for d in session.get_inputs()[0].shape]
        z = np.random.default_rng(2).random(shape, np.float32)
        feed = {session.get_inputs()[0].name: z}
        again = onnxruntime.InferenceSession(
            with_temperature(real, 1.0), providers=["CPUExecutionProvider"]
        )
        assert np.array_equal(again.run(None, feed)[0], session.run(None, feed)[0])


def test_a_div_by_the_temperature_goes_before_every_softmax() -> None:
    w, b = _weights(0)
    graph = _two_view_graph(w, b)
    images = np.random.default_rng(1).integers(0, 256, (8, 48, 48), dtype=np.uint8)
    x = (images / 255.0).astype(np.float32)[:, None]
    scaled = with_temperature(graph, 2.5)
    assert temperature_of(scaled) == 2.5 and temperature_of(graph) is None
    import onnx

    nodes = list(onnx.load_from_string(scaled).graph.node)
    softmaxes = [i for i, n in enumerate(nodes) if n.op_type == "Softmax"]
    assert len(softmaxes) == 2
    for i in softmaxes:
        div = nodes[i - 1]
        assert div.op_type == "Div" and list(div.input)[1] == TEMPERATURE
        assert nodes[i].input[0] == div.output[0]
    z = _view_logits(w, b, images)
    want = softmax(z.reshape(-1, len(CLASSES)) / 2.5).reshape(8, 2, -1).mean(axis=1)
    assert np.abs(_run(scaled, x)[0] - want).max() < 1e-5
    exposed, names = with_logits(graph)
    assert names == ["z0", "z1"]
    out = _run(exposed, x)
    assert np.abs(np.stack(out[1:], axis=1) - z).max() < 1e-4
    with pytest.raises(ValueError, match="already has a temperature"):
        with_temperature(scaled, 1.5)
    with pytest.raises(ValueError, match="positive"):
        with_temperature(graph, 0.0)
    no_softmax = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    with pytest.raises(ValueError, match="no Softmax"):
        with_temperature(finish_model(no_softmax, "test").SerializeToString(), 2.0)


# -- the fit ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("views", "true_t"), [(1, 2.0), (1, 0.6), (2, 1.7)])
def test_the_fit_recovers_a_known_temperature(views: int, true_t: float) -> None:
    rng = np.random.default_rng(views)
    logits = rng.normal(0, 3, (20_000, views, len(CLASSES)))
    labels = _draw(logits, true_t, seed=5)
    fit = fit_temperature(logits, labels)
    assert abs(fit.temperature / true_t - 1) < 0.05
    assert fit.nll_after < fit.nll_before and not fit.at_bound
    assert fit == fit_temperature(logits, labels)  # deterministic
    assert nll(logits, labels, fit.temperature) == fit.nll_after


def test_probabilities_fit_as_their_logits_do() -> None:
    """A file of probabilities gives the temperature its logits give (``log p``)."""
    logits = np.random.default_rng(0).normal(0, 3, (5000, len(CLASSES)))
    labels = _draw(logits[:, None], 1.5, seed=1)
    from_logits = fit_temperature(logits, labels).temperature
    from_probs = fit_temperature(from_probabilities(softmax(logits)), labels).temperature
    assert abs(from_logits - from_probs) < 1e-4


def test_bad_logits_are_refused() -> None:
    logits = np.zeros((4, len(CLASSES)))
    with pytest.raises(ValueError, match="labels must lie"):
        fit_temperature(logits, np.array([0, 1, 2, 7]))
    with pytest.raises(ValueError, match="need"):
        fit_temperature(logits, np.array([0, 1]))


# -- the command, on a synthetic face version -------------------------------------------------


@pytest.fixture()
def synthetic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ModelRepository, Path]:
    """face-emotion/1 in production of a private root: the two-view graph, its card and the
    config.yaml of a run (holdout 8 %, seed 3); and FER2013-shaped data whose labels the
    graph's own views give at T = 2 (so it is over-confident by that much)."""
    w, b = _weights(0)
    repo = ModelRepository(tmp_path / "models")
    card = ModelCard(
        name=FACE,
        version="1",
        task="face-emotion",
        modality="face",
        classes=list(CLASSES),
        input=ImageInput(
            name="input",
            layout="NCHW",
            height=48,
            width=48,
            color="gray",
            scale=1 / 255,
            offset=0.0,
        ),
        output=Output(name="scores", kind="probabilities"),
        source=Source(kind="training", description="a test graph"),
        licence="MIT",
        intended_use=FACE_EMOTION_USE,
        sha256="",
        created=datetime.now(UTC),
        notes=["Reference distribution: none."],
    )
    cfg = TrainConfig.model_validate({"seed": 3, "data": {"holdout": 0.08}})
    repo.register(card, _two_view_graph(w, b), {"config.yaml": cfg.to_yaml().encode()})
    repo.set_alias(FACE, "1")
    rng = np.random.default_rng(4)
    splits = {}
    for split, n in (("train", 3000), ("val", 300)):
        images = rng.integers(0, 256, (n, 48, 48), dtype=np.uint8)
        splits[split] = Split(images, _draw(_view_logits(w, b, images), 2.0, seed=n))
    data = tmp_path / "faces.npz"
    face_data.save_npz(splits, data)
    monkeypatch.setenv("EMOSTREAM_MODEL_ROOT", str(repo.root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return repo, data


def _cli(data: Path, run: Path, *extra: str) -> list[str]:
    return ["train", "calibrate", FACE, "--data", str(data), "--run", str(run), *extra]


def test_the_command_fits_on_the_parents_holdout_and_registers_the_next_version(
    synthetic: tuple[ModelRepository, Path], tmp_path: Path
) -> None:
    repo, data = synthetic
    result = runner.invoke(app, _cli(data, tmp_path / "run"))
    assert result.exit_code == 0, result.output
    assert "registered face-emotion/2" in result.output and "T = " in result.output
    assert repo.versions(FACE) == ["1", "2"] and repo.resolve(FACE) == "1"
    card = repo.card(FACE, "2")
    c = card.calibration
    assert c is not None and card.source.parent == "face-emotion/1"
    assert 1.4 < c.temperature < 2.8  # drawn at 2, fitted on 240 faces
    _, held = holdout_split(face_data.read(data, False)["train"], 0.08, 3)
    assert held is not None and c.fitted_samples == len(held) == 240
    assert "held out (stratified, seed 3)" in c.fitted_on
    (check,) = c.checks
    assert (check.split, check.samples) == ("val (PublicTest)", 300)
    assert check.ece_after < check.ece_before
    assert card.evaluation[0].ece == check.ece_after
    assert card.notes[0] != "Reference distribution: none."  # replaced, not kept
    folder = repo.version_dir(FACE, "2")
    files = {f.name for f in folder.iterdir()}
    assert {"calibration.png", "reliability.png", "report.json", "config.yaml"} <= files
    assert (folder / "calibration.png").read_bytes()[:4] == b"\x89PNG"
    assert temperature_of(repo.onnx_path(FACE, "2").read_bytes()) == pytest.approx(
        c.temperature, rel=1e-4
    )
    load_checked(repo, FACE, "2")  # the serving check passes, check.npz included
    tracking = Tracking.for_repository(repo.root)
    versions = tracking.client.search_model_versions(f"name='{FACE}'")
    assert [v.tags[VERSION_TAG] for v in versions] == ["2"]


def test_fit_logits_from_a_file_and_no_second_temperature(
    synthetic: tuple[ModelRepository, Path], tmp_path: Path
) -> None:
    repo, data = synthetic
    logits = np.random.default_rng(0).normal(0, 3, (4000, len(CLASSES)))
    scores = tmp_path / "oof.npz"
    np.savez(scores, logits=logits, labels=_draw(logits[:, None], 3.0, seed=2))
    result = runner.invoke(app, _cli(data, tmp_path / "run", "--fit-logits", str(scores)))
    assert result.exit_code == 0, result.output
    c = repo.card(FACE, "2").calibration
    assert c is not None and abs(c.temperature / 3.0 - 1) < 0.08
    assert c.fitted_samples == 4000 and "oof.npz" in c.fitted_on
    again = runner.invoke(app, _cli(data, tmp_path / "again", "--version", "2"))
    assert again.exit_code == 2
    assert "already divides its logits by a temperature" in again.stderr
    assert "calibrate face-emotion/1 instead" in again.stderr


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (["--fit-speakers", "15,16"], "--fit-speakers is for voice models"),
        (["--fit-logits", "missing.npz"], "no such file"),
        (["--fit-logits", "{bad}"], "do not make N rows of 7 classes"),
        (["--version", "9"], None),
    ],
)
def test_bad_input_exits_with_the_reason(
    synthetic: tuple[ModelRepository, Path], tmp_path: Path, extra: list[str], reason: str | None
) -> None:
    repo, data = synthetic
    bad = tmp_path / "bad.npz"
    np.savez(bad, probs=np.full((10, 3), 1 / 3), labels=np.zeros(10, np.int64))
    args = [
        a.replace("{bad}", str(bad)).replace("missing.npz", str(tmp_path / "x.npz")) for a in extra
    ]
    result = runner.invoke(app, _cli(data, tmp_path / "run", *args))
    if reason is None:  # a version the repository does not have
        assert result.exit_code == 3 and "no alias '9'" in result.stderr
    else:
        assert result.exit_code == 2, result.output
        assert reason in result.stderr
    assert "Traceback" not in result.output
    assert repo.versions(FACE) == ["1"]


def test_a_face_version_without_its_training_config_needs_fit_logits(
    synthetic: tuple[ModelRepository, Path], tmp_path: Path
) -> None:
    repo, data = synthetic
    (repo.version_dir(FACE, "1") / "config.yaml").unlink()
    result = runner.invoke(app, _cli(data, tmp_path / "run"))
    assert result.exit_code == 2
    assert "has no config.yaml" in result.stderr and "--fit-logits" in result.stderr


# -- the shipped voice model, a few real clips ------------------------------------------------


def test_voice_fits_on_named_speakers_and_says_when_it_trained_on_them(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipped = BUNDLED_ROOT / "voice-emotion" / "1"
    if not (shipped / "model.onnx").is_file():
        pytest.skip("voice-emotion/1 does not ship in this checkout")
    repo = ModelRepository(tmp_path / "models")
    shutil.copytree(shipped, repo.version_dir("voice-emotion", "1"))
    monkeypatch.setenv("EMOSTREAM_MODEL_ROOT", str(repo.root))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = ["train", "calibrate", "voice-emotion", "--version", "1", "--limit", "6"]
    args += ["--data", str(data_root / "ravdess"), "--run", str(tmp_path / "run")]
    bad = runner.invoke(app, [*args, "--fit-speakers", "17"])
    assert bad.exit_code == 2 and "test speakers: fit on others" in bad.stderr
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    card = repo.card("voice-emotion", "2")
    c = card.calibration
    assert c is not None and c.fitted_on.startswith("RAVDESS speakers 15, 16")
    splits = [k.split for k in c.checks]
    assert splits == [
        f"held-out speakers 17, 18, 19, 20, {cond}, per {unit}"
        for cond in ("clean", "telephone")
        for unit in ("clip", "window")
    ]
    assert [e.split for e in card.evaluation] == splits
    assert any("were trained on by voice-emotion/1" in n for n in card.notes)
    load_checked(repo, "voice-emotion", "2", modality="voice")


@pytest.mark.parametrize("name", ["face-emotion"])
def test_the_shipped_calibrated_version_is_the_default_and_passes_the_serving_check(
    name: str, tmp_path: Path
) -> None:
    """The calibrated version that ships is the first default, names its parent and the
    temperature in its card, says its calibration error fell on a set it was not fitted on,
    passes the serving check, and gives its parent's outputs again at T = 1."""
    from emostream.models.repository import DEFAULT_VERSIONS

    repo = ModelRepository(BUNDLED_ROOT)
    version = DEFAULT_VERSIONS[name][0]
    card = repo.card(name, version)
    assert card.calibration is not None and card.source.parent is not None
    assert 0.5 < card.calibration.temperature < 2.0
    assert card.calibration.checks and all(
        c.ece_after < c.ece_before and c.split not in card.calibration.fitted_on
        for c in card.calibration.checks
    )
    assert card.calibration.nll_after <= card.calibration.nll_before
    assert any(e.ece is not None and e.ece < 0.03 for e in card.evaluation)
    load_checked(repo, name, version, modality=card.modality)  # check.npz included
    got = temperature_of(repo.onnx_path(name, version).read_bytes())
    assert got == pytest.approx(card.calibration.temperature, abs=1e-4)
    parent_name, _, parent_version = card.source.parent.partition("/")
    parent = repo.card(parent_name, parent_version)
    assert parent.calibration is None and parent.classes == card.classes
