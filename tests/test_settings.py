"""The settings tree: every name it reads, who wins, what a bad value says, and the reference.

Every ``EMOSTREAM_*`` name is read into its branch (the flat names of the first releases
and the nested ``EMOSTREAM_<BRANCH>__<FIELD>`` ones); keywords beat the environment and a
nested name beats a flat one; docs/SETTINGS.md is the generated reference, kept current.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from typer.testing import CliRunner

from emostream.cli import app
from emostream.models.detectors.plugins.haar import HaarConfig
from emostream.settings import LEGACY, Leaf, Settings, describe, env_names, leaf, leaves
from emostream.settings import reference_markdown as reference

REFERENCE = Path(__file__).resolve().parents[1] / "docs" / "SETTINGS.md"

#: Values that the generic rule in ``_sample`` cannot make (URLs, choices, unset defaults).
SPECIAL: dict[str, tuple[str, object]] = {
    "model_root": ("/srv/emostream-models", Path("/srv/emostream-models")),
    "broker.url": ("redis://127.0.0.1:6390/0", "redis://127.0.0.1:6390/0"),
    "broker.codec": ("raw", "raw"),
    "broker.audio_codec": ("s16", "s16"),
    "voice.vad": ("webrtc", "webrtc"),
    "worker.max_batch": ("8", 8),
    "local.processes": ("4", 4),
    "local.inference": ("3", 3),
    "detector.thresholds": ("[0.5, 0.6]", (0.5, 0.6)),
    "worker.name": ("w-test", "w-test"),
    "runner.providers": ("CPUExecutionProvider", ["CPUExecutionProvider"]),
    "detector.type": ("haar", "haar"),
    "detector.model_root": ("/srv/emostream-models", Path("/srv/emostream-models")),
    "detector.score_threshold": ("0.5", 0.5),
    "detector.nms": ("hard", "hard"),
    "detector.range": ("far", "far"),
    "detector.max_side": ("400", 400),
    "server.ssl_certfile": ("/srv/tls/cert.pem", "/srv/tls/cert.pem"),
    "server.ssl_keyfile": ("/srv/tls/key.pem", "/srv/tls/key.pem"),
    "calls.analyse_roles": ("customer", ["customer"]),
    "calls.webhook_url": ("http://127.0.0.1:9/hook", "http://127.0.0.1:9/hook"),
    "audiohook.api_keys": (
        '{"genesys": "c2VjcmV0", "plain": ""}',
        {"genesys": SecretStr("c2VjcmV0"), "plain": SecretStr("")},
    ),
    "twilio.public_url": ("wss://calls.example.com/", "wss://calls.example.com"),
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in env_names():
        monkeypatch.delenv(name, raising=False)


def _sample(x: Leaf) -> tuple[str, object]:
    """A valid value unlike the default, as the environment writes it, and as it is read."""
    if x.dotted in SPECIAL:
        return SPECIAL[x.dotted]
    default = x.field.get_default(call_default_factory=True)
    if isinstance(default, bool):
        return str(not default).lower(), not default
    if isinstance(default, int):
        return str(default + 1), default + 1
    if isinstance(default, float):
        value = default / 2 if default <= 1 else default + 0.5  # inside (0, 1] bounds too
        return str(value), value
    if isinstance(default, list):
        return "a,b", ["a", "b"]
    if isinstance(default, str):
        return f"{default}-test", f"{default}-test"
    raise AssertionError(f"no sample value for {x.dotted}: add one to SPECIAL")


def _value(settings: Settings, path: tuple[str, ...]) -> object:
    node: object = settings
    for part in path:
        node = getattr(node, part)
    return node


@pytest.mark.parametrize("name", sorted(LEGACY))
def test_every_flat_name_lands_in_its_branch(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    x = leaf(".".join(LEGACY[name]))
    text, expected = _sample(x)
    monkeypatch.setenv(f"EMOSTREAM_{name.upper()}", text)
    if x.backend == "haar":
        monkeypatch.setenv("EMOSTREAM_DETECTOR", "haar")
    assert expected != x.field.get_default(call_default_factory=True)
    assert _value(Settings(), x.path) == expected


def _nested_cases() -> list[object]:
    return [pytest.param(x, id=f"{x.dotted}-{x.backend or 'any'}") for x in leaves()]


@pytest.mark.parametrize("x", _nested_cases())
def test_every_nested_name_is_read(x: Leaf, monkeypatch: pytest.MonkeyPatch) -> None:
    text, expected = _sample(x)
    monkeypatch.setenv(x.env, text)
    if x.backend:
        monkeypatch.setenv("EMOSTREAM_DETECTOR__TYPE", x.backend)
    assert _value(Settings(), x.path) == expected


def test_nested_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOSTREAM_WORKER__MAX_BATCH", "8")
    monkeypatch.setenv("EMOSTREAM_DETECTOR__TYPE", "haar")
    monkeypatch.setenv("EMOSTREAM_DETECTOR__MAX_SIDE", "400")
    monkeypatch.setenv("EMOSTREAM_SERVER__API_TOKENS", "a,b")
    s = Settings()
    assert s.worker.max_batch == 8
    assert isinstance(s.detector, HaarConfig) and s.detector.max_side == 400
    assert s.server.api_tokens == ["a", "b"]


def test_keywords_beat_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOSTREAM_PORT", "9001")
    monkeypatch.setenv("EMOSTREAM_SERVER__PORT", "9002")
    monkeypatch.setenv("EMOSTREAM_SERVER__HOST", "127.0.0.2")
    assert Settings(port=9003).server.port == 9003
    tree = Settings(server={"port": 9004})  # type: ignore[arg-type]
    assert tree.server.port == 9004 and tree.server.host == "127.0.0.2"  # merged, not replaced


def test_a_nested_name_beats_its_flat_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOSTREAM_PORT", "9001")
    monkeypatch.setenv("EMOSTREAM_SERVER__PORT", "9002")
    monkeypatch.setenv("EMOSTREAM_WORKER_MAX_BATCH", "4")
    s = Settings()
    assert s.server.port == 9002
    assert s.worker.max_batch == 4  # the flat name still counts where no nested one is set


@pytest.mark.parametrize(
    ("env", "where"),
    [
        ({"EMOSTREAM_WORKER__MAX_BATCH": "0"}, "worker.max_batch (formerly worker_max_batch)"),
        ({"EMOSTREAM_WORKER_MAX_BATCH": "0"}, "worker.max_batch (formerly worker_max_batch)"),
        ({"EMOSTREAM_BROKER": "http://example"}, "broker.url (formerly broker)"),
        ({"EMOSTREAM_SERVER__PORT": "port"}, "server.port (formerly port)"),
        ({"EMOSTREAM_BROKER__RESULTS_TTL_S": "0"}, "broker.results_ttl_s"),
    ],
)
def test_a_bad_value_names_the_setting(
    env: dict[str, str], where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValidationError) as info:
        Settings()
    assert [describe(e["loc"]) for e in info.value.errors()] == [where]
    r = CliRunner().invoke(app, ["models", "list"])
    assert r.exit_code == 2 and f"invalid settings: {where}: " in r.stderr


def test_env_names_cover_every_flat_and_nested_name() -> None:
    names = env_names()
    assert {f"EMOSTREAM_{k.upper()}" for k in LEGACY} <= names
    assert {x.env for x in leaves()} <= names
    for nested in (
        "EMOSTREAM_WORKER__MAX_BATCH",
        "EMOSTREAM_SERVER__API_TOKENS",
        "EMOSTREAM_DETECTOR__TYPE",
        "EMOSTREAM_DETECTOR__SCALE_FACTOR",  # haar only
        "EMOSTREAM_DETECTOR__NMS_IOU",  # blazeface only
        "EMOSTREAM_BROKER__CLAIM_INTERVAL_MS",  # no flat name
        "EMOSTREAM_MODEL_ROOT",
        "EMOSTREAM_LOG_LEVEL",
    ):
        assert nested in names
    assert names == {f"EMOSTREAM_{k.upper()}" for k in LEGACY} | {x.env for x in leaves()}


def test_the_reference_is_current_and_printed_by_the_cli() -> None:
    text = reference()
    assert REFERENCE.read_text() == text, "run: emostream settings > docs/SETTINGS.md"
    r = CliRunner().invoke(app, ["settings"])
    assert r.exit_code == 0 and r.stdout == text
    rows = {line.split(" | ")[0]: line for line in text.splitlines() if line.startswith("| `")}
    assert len(rows) == len(leaves())
    for x in leaves():
        row = rows["| `" + x.dotted + "`" + (f" ({x.backend})" if x.backend else "")]
        assert f"`{x.env}`" in row and x.description in row.replace("\\|", "|")
        assert (f"`{x.flat}`" in row) if x.flat else " |  | " in row
    assert "| `server.port` | `EMOSTREAM_SERVER__PORT` | `EMOSTREAM_PORT` | `8000` |" in text


def test_an_empty_model_root_is_the_default_repository(monkeypatch: pytest.MonkeyPatch) -> None:
    """``EMOSTREAM_MODEL_ROOT=`` means unset (as paths.model_root reads it), never the
    current directory: a pull must not write a repository wherever it was run."""
    from emostream.paths import bundled_root

    monkeypatch.setenv("EMOSTREAM_MODEL_ROOT", "")
    assert Settings().model_root == bundled_root()
    assert Settings(model_root="").model_root == bundled_root()
