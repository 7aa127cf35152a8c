"""A child process for test_metrics_multiprocess.py, in whichever mode its environment sets.

``python metrics_child.py SCENARIO JSON``: counts with emostream's real metrics as the JSON
says, prints its own exposition and a ``#done`` line, then waits for a line on stdin
(``observe``: 2 more drift predictions, then ``#observed``) until stdin closes.
"""

from __future__ import annotations

import asyncio
import json
import sys

from emostream import metrics


def count(a: dict[str, float]) -> None:
    """The metrics two ingest processes share: a counter, gauges, a histogram, a removal."""
    metrics.FRAMES_IN.labels("face").inc(a["frames"])
    metrics.ACTIVE_SESSIONS.set(a["sessions"])
    metrics.BROKER_UP.set(a["broker_up"])
    for seconds in (0.004, 0.3)[: int(a["observations"])]:
        metrics.STAGE_LATENCY.labels("decode", "face").observe(seconds)
    metrics.MODEL_INFO.labels("m", "1", "face", "cpu").set(1)
    metrics.MODEL_INFO.labels("m", "2", "face", "cpu").set(1)
    metrics.remove(metrics.MODEL_INFO, "m", "1", "face", "cpu")  # version 1 replaced


def serve_all() -> object:
    """Every series a server of all roles and both modalities creates, with drift."""
    from emostream.models.drift import DriftMonitor

    for modality in ("face", "voice"):
        metrics.initialise("all-in-one", modality)
    metrics.count_tasks(asyncio.new_event_loop())
    classes = ["a", "b"]
    old = DriftMonitor("m", "1", "face", classes, {"a": 0.5, "b": 0.5})
    old.retire()
    monitor = DriftMonitor("m", "2", "face", classes, {"a": 0.5, "b": 0.5})
    monitor.observe([0, 1, 1])
    DriftMonitor("v", "1", "voice", classes, None)
    return monitor


def main() -> None:
    scenario, args = sys.argv[1], json.loads(sys.argv[2])
    monitor = serve_all() if scenario == "serve" else count(args)
    print(metrics.exposition().decode(), "#done", sep="\n", flush=True)
    for line in sys.stdin:
        if line.strip() == "observe":
            monitor.observe([0, 0])  # type: ignore[attr-defined]
            print("#observed", flush=True)


if __name__ == "__main__":
    main()
