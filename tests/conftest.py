"""Shared fixtures: the real default model, the shared data (skipped when absent)."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from emostream.broker.redis_ingest import RedisIngest
from emostream.models.face import FaceAnalyzer
from emostream.models.repository import ModelRepository
from emostream.models.runner import Classifier
from emostream.paths import data_root as find_data_root
from emostream.paths import model_root
from emostream.settings import Settings
from emostream.training.blazeface_import import import_blazeface
from emostream.training.fer_import import NAME, import_fer
from emostream.training.retinaface_import import import_retinaface
from emostream.training.yunet_import import import_yunet

from brokers import broker_config
from model_versions import model_root_copy
from redis_server import RedisServer

FIXTURES = Path(__file__).parent / "fixtures"
# Hypothesis (the fuzz tests) caches under .hypothesis/ in the working directory even with
# no example database; keep that with the other test output.
os.environ.setdefault(
    "HYPOTHESIS_STORAGE_DIRECTORY", str(Path(__file__).parent.parent / "test-output" / "hypothesis")
)
NO_DATA = "shared data not found: set EMOSTREAM_DATA to the folder holding fer2013/ and media/"
#: The fixtures that make a test need something beyond Python, and the marker (pyproject.toml)
#: that says so; `make check` leaves such tests out. A test that starts one by itself is
#: marked where it is written.
NEEDS = {"data_root": "data", "redis_server": "redis"}


@pytest.hookimpl(tryfirst=True)  # before `-m` selects on the markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        names = getattr(item, "fixturenames", ())
        for fixture, marker in NEEDS.items():
            if fixture in names:
                item.add_marker(marker)


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = find_data_root()
    if root is None:
        pytest.skip(NO_DATA)
    return root


@pytest.fixture(scope="session")
def media(data_root: Path) -> Path:
    path = data_root / "media"
    if not path.is_dir():
        pytest.skip(f"{path} missing")
    return path


def _ours_in_dev_shm() -> set[str]:
    shm = Path("/dev/shm")
    return {p.name for p in shm.iterdir() if "emostream" in p.name} if shm.is_dir() else set()


@pytest.fixture(scope="session", autouse=True)
def one_serve_process() -> Iterator[None]:
    """``serve`` as one process in this run unless a test asks for more: the default (one
    ingest process per core) ``exec``s a supervisor, which would replace a test process
    that calls the CLI in-process. Tests that start ``serve`` with the default on purpose
    clear ``EMOSTREAM_*`` from the environment they pass."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOSTREAM_LOCAL__PROCESSES", "1")
        yield


@pytest.fixture(scope="session", autouse=True)
def no_shared_memory_left() -> Iterator[None]:
    """Whatever the tests start and kill (``serve --processes``' children with ``-9``
    included), nothing of ours is left in ``/dev/shm`` when the run ends: arenas have no
    name there (memfd), and each run's metrics directory goes with its parent."""
    before = _ours_in_dev_shm()
    yield
    left = _ours_in_dev_shm() - before
    assert not left, f"left in /dev/shm by this run: {sorted(left)}"


@pytest.fixture(scope="session", autouse=True)
def private_model_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of the model repository (``EMOSTREAM_MODEL_ROOT``, else the checkout's
    ``models/artefacts/``) in a temporary folder, and ``EMOSTREAM_MODEL_ROOT`` pointing at
    it for the whole run (this process and every one it starts): no test writes into the
    checkout. Only the models are copied (every ``<name>/`` with a version).
    """
    source = ModelRepository(model_root())
    root = tmp_path_factory.mktemp("model-root")
    for name in source.names():
        shutil.copytree(source.root / name, root / name, symlinks=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMOSTREAM_MODEL_ROOT", str(root))
        yield root


@pytest.fixture(scope="session")
def repo(private_model_root: Path) -> ModelRepository:
    """The suite's repository with the default models pulled (the emotion model and the
    detectors): a private copy of the real
    one (``private_model_root``), so pulling here (a no-op once `make test` pulled them into
    the real one) never writes into the checkout."""
    r = ModelRepository(private_model_root)
    import_fer(r, progress=False)
    import_blazeface(r)
    import_yunet(r)
    import_retinaface(r)
    return r


@pytest.fixture(scope="session")
def classifier(repo: ModelRepository) -> Classifier:
    return Classifier.from_repository(repo, NAME)


@pytest.fixture(scope="session")
def analyzer(repo: ModelRepository) -> FaceAnalyzer:
    return FaceAnalyzer.from_settings(Settings(model_root=repo.root))


@pytest.fixture()
def tmp_repo(tmp_path: Path, repo: ModelRepository) -> ModelRepository:
    """A private repository a test may change freely: the real detectors and the imported
    face-emotion/1 in production (``model_root_copy``)."""
    return model_root_copy(repo, tmp_path / "models")


@pytest.fixture()
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture()
def output_dir(request: pytest.FixtureRequest) -> Iterator[Path]:
    """test-output/<test name>/: artefacts a person may want to look at after a run."""
    base = Path(
        os.environ.get("EMOSTREAM_TEST_OUTPUT", Path(__file__).parent.parent / "test-output")
    )
    path = base / request.node.name.replace("/", "_")
    path.mkdir(parents=True, exist_ok=True)
    yield path


@pytest.fixture()
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private redis-server on a free loopback port, stopped after the test."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture()
async def ingest(redis_server: RedisServer) -> AsyncIterator[RedisIngest]:
    """The ingest side of the Redis broker on the test's redis-server (``broker_config``).

    No ``lost`` verdicts: on a loaded machine a reclaim may come later than the default
    3 s past a deadline, and the tests that use this are about what the workers do, not
    about time. No worker watch either: these tests play the worker by hand (a
    ``RedisWorker`` made after the session opens), so none beats while they set up.
    """
    config = broker_config(redis_server.url, lost_after_s=600.0, worker_timeout_s=0)
    broker = RedisIngest(config)
    await broker.start()
    yield broker
    await broker.close()
