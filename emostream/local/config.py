"""``EMOSTREAM_LOCAL__*``: how many processes ``emostream serve`` runs on this machine, and
the shared memory between them. One home for each default."""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import BaseModel, Field

from emostream.fields import Unset


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count:
    a container or ``taskset`` limits it)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


class LocalConfig(BaseModel):
    processes: Annotated[int | None, Unset] = Field(
        default=None,
        ge=1,
        le=256,
        description="ingest processes behind the one port; unset = one per usable core; "
        "1 = today's single process (worker inside it)",
    )
    inference: Annotated[int | None, Unset] = Field(
        default=None,
        ge=1,
        le=64,
        description="inference processes with --processes > 1; unset = one per GPU, or on "
        "the CPU one per two usable cores (at least one)",
    )
    small_slot_kb: int = Field(
        default=128, ge=16, description="a shared-memory slot for an audio window (kB)"
    )
    small_slots: int = Field(default=256, ge=1, description="audio-window slots per ingest process")
    large_slots: int = Field(
        default=64,
        ge=1,
        description="frame slots per ingest process (each session.max_side² x 3 bytes)",
    )
    restart_backoff_s: float = Field(
        default=0.5, gt=0, description="first wait before restarting a dead child (doubles)"
    )
    max_restart_backoff_s: float = Field(default=10.0, gt=0)

    def ingest_processes(self) -> int:
        return self.processes if self.processes is not None else usable_cores()

    def inference_processes(self, gpus: int) -> int:
        """One per GPU; on the CPU one per two cores: ingest (decode, RTP) and inference
        each take about half of a stream's CPU."""
        if self.inference is not None:
            return self.inference
        return gpus if gpus > 0 else max(1, usable_cores() // 2)
