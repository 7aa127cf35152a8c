"""What a process serves now for one modality: the analyzer, its shadow, the last refusal.

The batching worker and ``/v1/predict`` read ``analyzer`` (and ``shadow``) once per batch
or request, and the watcher (``models/watch.py``) swaps a version in by assigning it:
one attribute write, atomic for every reader, so a batch that already holds the old
analyzer finishes on it and the next one starts on the new. Nothing here loads or checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from emostream.pipeline.analyzer import Analyzer

if TYPE_CHECKING:
    from emostream.models.shadow import Shadow

A = TypeVar("A", bound=Analyzer)


@dataclass(frozen=True)
class Refusal:
    """A version that was not taken, and why (shown on /readyz and logged)."""

    version: str
    reason: str


class ModelSlot(Generic[A]):
    def __init__(self, analyzer: A) -> None:
        self.analyzer: A = analyzer
        self.shadow: Shadow | None = None
        #: The last refusal per role ("production", "shadow"); cleared when that role's
        #: alias names what is loaded again.
        self.refused: dict[str, Refusal] = {}

    def status(self) -> dict[str, Any]:
        """The model, shadow and refusals, for /readyz."""
        shadow = self.shadow
        return {
            "model": self.analyzer.model,
            "provider": self.analyzer.provider,
            "shadow": None
            if shadow is None
            else {"model": shadow.model, "fraction": shadow.fraction},
            "refused": {
                role: {"version": r.version, "reason": r.reason} for role, r in self.refused.items()
            },
        }
