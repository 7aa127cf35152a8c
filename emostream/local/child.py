"""``python -m emostream.local.child ROLE INDEX``: one child process of ``serve --processes``.

The parent passes everything as inherited descriptors, named in the environment
(``EMOSTREAM_LOCAL_FDS``, JSON): ``control`` (its socket to the hub), ``settings`` (an
anonymous file holding the pickled settings, so API keys never appear in a command line
or an environment), ``arenas`` (every ingest's shared memory) and, for an ingest, ``public``
(the listening socket all ingests accept on) and ``private`` (the path of its own Unix
socket, where other ingests forward requests for its sessions). The child asks the
kernel to kill it when the parent dies, so no orphan keeps serving.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import pickle
import signal
import socket
import sys
from dataclasses import dataclass, field

from emostream.local.arena import Arena, Layout
from emostream.settings import Settings

FDS_ENV = "EMOSTREAM_LOCAL_FDS"
PR_SET_PDEATHSIG = 1
EXIT_MODEL_MISSING = 3


@dataclass
class Handed:
    """What the parent handed this child."""

    control: int
    settings: int
    arenas: dict[int, int]
    layout: tuple[int, int, int, int]
    public: int = -1
    private: str = ""
    peers: dict[int, str] = field(default_factory=dict)

    def to_env(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_env(cls) -> Handed:
        raw = json.loads(os.environ[FDS_ENV])
        raw["arenas"] = {int(k): v for k, v in raw["arenas"].items()}
        raw["peers"] = {int(k): v for k, v in raw["peers"].items()}
        raw["layout"] = tuple(raw["layout"])
        return cls(**raw)

    def fds(self) -> list[int]:
        return [self.control, self.settings, *self.arenas.values()] + (
            [self.public] if self.public >= 0 else []
        )


def die_with_parent() -> None:
    """``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel ends us when the parent ends."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before we got here
        sys.exit(1)


def read_settings(fd: int) -> Settings:
    size = os.fstat(fd).st_size
    settings = pickle.loads(os.pread(fd, size, 0))
    if not isinstance(settings, Settings):
        raise TypeError("the settings file holds no settings")
    return settings


def arenas(handed: Handed) -> dict[int, Arena]:
    layout = Layout(*handed.layout)
    return {i: Arena(i, fd, layout) for i, fd in handed.arenas.items()}


def main() -> None:
    role, index = sys.argv[1], int(sys.argv[2])
    die_with_parent()
    handed = Handed.from_env()
    settings = read_settings(handed.settings)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"%(asctime)s %(levelname)s %(name)s [{role} {index}]: %(message)s",
    )
    from emostream.models.logmel import one_blas_thread

    one_blas_thread()
    control = socket.socket(fileno=handed.control)
    if role == "ingest":
        from emostream.local.ingest_main import serve_ingest

        serve_ingest(settings, index, handed, control, arenas(handed)[index])
    elif role == "inference":
        from emostream.local.inference_main import run_inference

        sys.exit(asyncio.run(run_inference(settings, index, control, arenas(handed))))
    else:
        sys.exit(f"unknown role {role!r}")


if __name__ == "__main__":
    main()
