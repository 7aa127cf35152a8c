"""Hot promotion: follow the alias file and switch the served version without a restart.

Every process that serves a model (``serve`` with either broker, ``emostream worker``)
runs one watcher per slot. Every ``face.watch_interval_s`` it looks at ``aliases.json``
(a ``stat``, no read while nothing changed); when the file changed and the configured
alias (``production``) names another version, it loads that version beside the old one in
a thread (never on the event loop), checks it (``models/check.py``) and swaps it into the
slot. A version that fails is refused with the reason (a WARNING, the
``emostream_model_loads_total{result="refused"}`` counter, ``/readyz``) and the old one
keeps serving; it is tried again only when the alias file changes again, so a bad version
costs one load, not one per poll. The same goes for the ``shadow`` entry where the process
runs a face worker (``models/shadow.py``). The voice model is watched the same way (its
own slot, ``voice.watch_interval_s``); shadowing is for faces only so far: a voice
``shadow`` entry is not followed (a voice shadow would need its own comparison, not built).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, Protocol

from emostream import metrics
from emostream.modalities import spec
from emostream.modalities.base import ServedModelConfig
from emostream.models.card import ModelCard
from emostream.models.check import ModelRefused, load_checked
from emostream.models.drift import DriftConfig
from emostream.models.repository import ModelRepository
from emostream.models.runner import Classifier, RunnerConfig
from emostream.models.serving import ModelSlot, Refusal
from emostream.models.shadow import Shadow
from emostream.models.tally import ModelTally
from emostream.pipeline.analyzer import Analyzer
from emostream.supervise import Supervised, supervise

log = logging.getLogger("emostream.models.watch")

Signature = tuple[int, int, int] | None


class Swappable(Analyzer, Protocol):
    """An analyzer the watcher can replace: its card, and the same analyzer on a new model."""

    @property
    def card(self) -> ModelCard: ...

    @property
    def tally(self) -> ModelTally: ...

    def rebuilt(self, classifier: Classifier, drift: DriftConfig | None) -> Any: ...


class ModelWatcher:
    def __init__(
        self,
        slot: ModelSlot[Any],
        repo: ModelRepository,
        model: ServedModelConfig,
        runner: RunnerConfig | None = None,
        drift: DriftConfig | None = None,
        *,
        shadow: bool = False,
    ) -> None:
        self.slot = slot
        self.repo = repo
        self.name = model.model
        self.alias = model.alias
        self.interval_s = model.watch_interval_s
        self.runner = runner
        self.drift = drift
        self.modality = slot.analyzer.modality
        self.follows_shadow = shadow and spec(self.modality).shadows
        self._seen: Signature | bool = False  # never equal to a signature: first poll acts
        self._loop: Supervised | None = None

    # -- the loop ------------------------------------------------------------------------
    def start(self) -> None:
        """Watch in a supervised task (none when the interval is 0: switching is off)."""
        if self.interval_s > 0:
            self._loop = supervise(f"{self.slot.analyzer.modality}-model-watch", self.run)

    @property
    def tasks(self) -> list[Supervised]:
        return [] if self._loop is None else [self._loop]

    async def stop(self) -> None:
        if self._loop is not None:
            await self._loop.stop()

    async def run(self) -> None:
        while True:
            await self.poll()
            await asyncio.sleep(self.interval_s)

    def _signature(self) -> Signature:
        """Changes whenever the file is replaced (every write renames a new file in)."""
        try:
            st = os.stat(self.repo.root / self.name / "aliases.json")
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    async def poll(self) -> bool:
        """Act on the alias file if it changed since the last poll; whether it had."""
        signature = self._signature()
        if signature == self._seen:
            return False
        self._seen = signature
        await self._follow_production()
        if self.follows_shadow:
            await self._follow_shadow()
        return True

    # -- production ------------------------------------------------------------------------
    async def _follow_production(self) -> None:
        current: Swappable = self.slot.analyzer
        try:
            version = self.repo.resolve(self.name, self.alias)
        except (LookupError, ValueError, OSError) as exc:  # unreadable, or names nothing
            self._refuse("production", None, str(exc))
            return
        if version == current.card.version:
            self.slot.refused.pop("production", None)
            return
        try:
            new = await asyncio.to_thread(self._build, version, current)
        except ModelRefused as exc:
            self._refuse("production", version, exc.reason)
            return
        self.slot.analyzer = new  # the swap: the next batch or request reads the new one
        current.tally.retire()
        self.slot.refused.pop("production", None)
        metrics.MODEL_LOADS.labels(self.name, version, "loaded").inc()
        log.info("serving %s on %s (was %s)", new.model, new.provider, current.model)

    def _build(self, version: str, current: Swappable) -> Swappable:
        """In a thread: the checked classifier in the analyzer (face: same detector)."""
        classifier = load_checked(self.repo, self.name, version, self.runner, self.modality)
        new: Swappable = current.rebuilt(classifier, self.drift)
        return new

    # -- shadow ----------------------------------------------------------------------------
    async def _follow_shadow(self) -> None:
        try:
            want = self.repo.shadow(self.name)
        except (ValueError, OSError) as exc:
            self._refuse("shadow", None, str(exc))
            return
        have = self.slot.shadow
        if want is None:
            self.slot.refused.pop("shadow", None)
            if have is not None:
                self.slot.shadow = None
                log.info("shadow evaluation of %s stopped", have.model)
            return
        if have is not None and have.model == f"{self.name}/{want.version}":
            self.slot.refused.pop("shadow", None)
            if have.fraction != want.fraction:
                self.slot.shadow = Shadow(have.classifier, want.fraction)
            return
        try:
            classifier = await asyncio.to_thread(
                load_checked, self.repo, self.name, want.version, self.runner
            )
        except ModelRefused as exc:
            self._refuse("shadow", want.version, exc.reason)
            return
        self.slot.shadow = Shadow(classifier, want.fraction)
        self.slot.refused.pop("shadow", None)
        metrics.MODEL_LOADS.labels(self.name, want.version, "loaded").inc()
        log.info(
            "shadow: %s scores %.0f%% of the faces beside %s, results not sent",
            classifier.card.ref,
            want.fraction * 100,
            self.slot.analyzer.model,
        )

    def _refuse(self, role: str, version: str | None, reason: str) -> None:
        """Keep what serves, say why; ``version`` None: the alias file names no version."""
        self.slot.refused[role] = Refusal(version or "?", reason)
        if version is not None:
            metrics.MODEL_LOADS.labels(self.name, version, "refused").inc()
        log.warning(
            "model %s version %s refused as %s: %s; still serving %s",
            self.name,
            version or "(none)",
            role,
            reason,
            self.slot.analyzer.model,
        )
