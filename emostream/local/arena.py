"""Shared memory for payloads: one anonymous file per ingest process, cut into slots.

An ingest process copies a decoded frame or an audio window into a free slot once and
sends only a ``Ref`` (which arena, which slot, shape, dtype); an inference process maps the
same file and reads the payload in place, with no copy. The slot goes back to the free
list when the job's outcome (scored, dropped or failed) returns to the ingest.

Why ``memfd_create`` and not ``multiprocessing.shared_memory``: an anonymous file has no
name in ``/dev/shm``, so nothing can leak when any process is killed with ``-9``: the
memory goes when the last process holding its descriptor or mapping ends. The parent
creates each arena and hands its descriptor to the children it starts.

Two slot sizes: audio windows (about 100 kB) and frames (``max_side``² x 3 bytes), so a
call's sixteen queued windows do not each hold a frame's worth of memory. Free slots are
a stack: the most recently freed slot is reused first, so pages that were never written
are never touched (RSS follows the load, not the arena size).
"""

from __future__ import annotations

import contextlib
import mmap
import os
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Ref:
    """Where a payload lies: arena (the ingest's index), slot, and how to read it."""

    arena: int
    slot: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def token(self) -> str:
        """As a job's ``token`` (the broker's handle for a job): ``arena:slot:dtype:shape``."""
        return f"{self.arena}:{self.slot}:{self.dtype}:{'x'.join(map(str, self.shape))}"

    @classmethod
    def parse(cls, token: str) -> Ref:
        """The ``Ref`` of a token (``ValueError`` for one that is not)."""
        arena, slot, dtype, shape = token.split(":")
        dims = tuple(int(d) for d in shape.split("x")) if shape else ()
        return cls(int(arena), int(slot), dims, dtype)


@dataclass(frozen=True)
class Layout:
    """Slot sizes and counts: small slots first, then large ones."""

    small_bytes: int
    small: int
    large_bytes: int
    large: int

    @property
    def size(self) -> int:
        return self.small_bytes * self.small + self.large_bytes * self.large

    def span(self, slot: int) -> tuple[int, int]:
        """(offset, capacity) of a slot."""
        if slot < self.small:
            return slot * self.small_bytes, self.small_bytes
        first = self.small_bytes * self.small
        return first + (slot - self.small) * self.large_bytes, self.large_bytes


class ArenaFullError(RuntimeError):
    """No free slot of the size a payload needs (the ingest drops it as ``overload``)."""


class Arena:
    """One ingest's slots, mapped in this process (writer or reader)."""

    def __init__(self, index: int, fd: int, layout: Layout) -> None:
        self.index = index
        self.fd = fd
        self.layout = layout
        self._map = mmap.mmap(fd, layout.size)
        self._buf = np.frombuffer(self._map, np.uint8)
        self._free_small = list(range(layout.small - 1, -1, -1))
        self._free_large = list(range(layout.small + layout.large - 1, layout.small - 1, -1))

    @classmethod
    def create(cls, index: int, layout: Layout) -> Arena:
        """A new anonymous file of the layout's size (the parent's job)."""
        fd = os.memfd_create(f"emostream-arena-{index}", os.MFD_CLOEXEC)
        os.ftruncate(fd, layout.size)
        return cls(index, fd, layout)

    def put(self, payload: np.ndarray) -> Ref:
        """Copy ``payload`` into a free slot (``ArenaFullError`` when none fits)."""
        data = np.ascontiguousarray(payload)
        need = data.nbytes
        if need <= self.layout.small_bytes and self._free_small:
            slot = self._free_small.pop()
        elif need <= self.layout.large_bytes and self._free_large:
            slot = self._free_large.pop()
        else:
            raise ArenaFullError(
                f"no free slot for {need} bytes in arena {self.index} "
                f"({len(self._free_small)} small, {len(self._free_large)} large free)"
            )
        offset, _ = self.layout.span(slot)
        self._buf[offset : offset + need] = data.reshape(-1).view(np.uint8)
        return Ref(self.index, slot, tuple(data.shape), data.dtype.str)

    def view(self, ref: Ref) -> np.ndarray:
        """The payload in place (valid until its slot is freed and written again)."""
        offset, capacity = self.layout.span(ref.slot)
        dtype = np.dtype(ref.dtype)
        count = int(np.prod(ref.shape, dtype=np.int64))
        if count * dtype.itemsize > capacity:
            raise ValueError(f"reference {ref} is larger than its slot")
        flat = self._buf[offset : offset + count * dtype.itemsize].view(dtype)
        return flat.reshape(ref.shape)

    def free(self, slot: int) -> None:
        (self._free_small if slot < self.layout.small else self._free_large).append(slot)

    @property
    def in_use(self) -> int:
        return self.layout.small + self.layout.large - len(self._free_small) - len(self._free_large)

    def close(self) -> None:
        """Unmap (a view still held elsewhere keeps the mapping until it goes)."""
        del self._buf
        with contextlib.suppress(BufferError):
            self._map.close()
