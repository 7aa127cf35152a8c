"""Draw docs/dataflow.png: the data flow of docs/ARCHITECTURE.md ("Data flow") as a picture.

Run from a checkout with matplotlib (the ``convert`` or ``dashboards`` extra):

    python scripts/draw_dataflow.py [OUT.png]

The picture is the text diagram of ARCHITECTURE.md drawn again, with the voice path and the
model repository beside it; change both together.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

OUT = Path(__file__).resolve().parent.parent / "docs" / "dataflow.png"

INGEST = "#dbe9f6"
BROKER = "#fde9c9"
WORKER = "#dff0d8"
OUTSIDE = "#eeeeee"
EDGE = "#444444"


@dataclass(frozen=True)
class Box:
    """A rounded box: lower-left corner, size, title and body text, in axis units."""

    x: float
    y: float
    w: float
    h: float
    title: str
    body: str
    color: str

    def left(self, dy: float = 0.0) -> tuple[float, float]:
        return (self.x, self.y + self.h / 2 + dy)

    def right(self, dy: float = 0.0) -> tuple[float, float]:
        return (self.x + self.w, self.y + self.h / 2 + dy)

    def top(self, dx: float = 0.0) -> tuple[float, float]:
        return (self.x + self.w / 2 + dx, self.y + self.h)

    def bottom(self, dx: float = 0.0) -> tuple[float, float]:
        return (self.x + self.w / 2 + dx, self.y)


def draw_box(ax: Axes, b: Box) -> None:
    ax.add_patch(
        FancyBboxPatch(
            (b.x, b.y),
            b.w,
            b.h,
            boxstyle="round,pad=0.02,rounding_size=0.12",
            facecolor=b.color,
            edgecolor=EDGE,
            linewidth=1.2,
        )
    )
    ax.text(b.x + 0.12, b.y + b.h - 0.14, b.title, fontsize=10.5, weight="bold", va="top")
    ax.text(b.x + 0.12, b.y + b.h - 0.48, b.body, fontsize=8.6, va="top", linespacing=1.45)


def arrow(
    ax: Axes,
    start: tuple[float, float],
    end: tuple[float, float],
    label: str = "",
    *,
    bend: float = 0.0,
    offset: tuple[float, float] = (0.0, 0.0),
    dashed: bool = False,
) -> None:
    ax.add_patch(
        FancyArrowPatch(
            start,
            end,
            arrowstyle="-|>",
            mutation_scale=14,
            linewidth=1.3,
            color=EDGE,
            linestyle="--" if dashed else "-",
            connectionstyle=f"arc3,rad={bend}",
        )
    )
    if label:
        x = (start[0] + end[0]) / 2 + offset[0]
        y = (start[1] + end[1]) / 2 + offset[1]
        ax.text(
            x,
            y,
            label,
            fontsize=8.2,
            ha="center",
            va="center",
            style="italic",
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1.5},
        )


def draw(out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(16.0, 8.0))
    ax.set_xlim(0, 16)
    ax.set_ylim(0, 8.0)
    ax.axis("off")
    ax.text(
        0.1,
        7.9,
        'emostream: data flow (docs/ARCHITECTURE.md, "Data flow")',
        fontsize=13,
        weight="bold",
        va="top",
    )

    client = Box(
        0.1,
        4.6,
        2.5,
        2.6,
        "Clients",
        "browser demo page,\nsoftphone / SIP gateway,\nemostream client,\nOBS (WHIP)",
        OUTSIDE,
    )
    ingest = Box(
        3.7,
        4.2,
        4.4,
        3.2,
        "Ingest node  (stream/)",
        "transport → Session (tracks, roles): WebRTC\n"
        "   (POST /whip, /v1/offer; SDP checked), local\n"
        "video (modalities/face): → BGR, downscaled once\n"
        "   → Job(FrameInfo: size, scale)\n"
        "audio (modalities/voice): 16 kHz → VAD → 1.5 s\n"
        "   windows every 0.5 s → Job(VoiceInfo)\n"
        "   (silence: speech=false, no model)\n"
        "IngestBroker.submit: newest frame wins,\n"
        "   deadline 250 ms (voice 2 s)",
        INGEST,
    )
    broker = Box(
        9.2,
        4.5,
        4.3,
        2.6,
        "Broker  (emostream/broker/)",
        "memory: asyncio queues, worker in serve\n"
        "redis: stream emostream:jobs:<modality>,\n"
        "   group emostream-workers (XREADGROUP)\n"
        "results: emostream:results:<node>\n"
        "drops counted by reason: superseded,\n"
        "   deadline, session_closed, unavailable …",
        BROKER,
    )
    worker = Box(
        9.2,
        0.9,
        4.3,
        2.7,
        "Worker  (models/batching.py; N of them)",
        "WorkerBroker.take(modality, B, T)\n"
        "run_batch(analyzer, jobs): drop late jobs\n"
        "FaceAnalyzer: detect (1 frame in 5) or follow\n"
        "   by optical flow, classify all faces in\n"
        "   one ONNX Runtime call\n"
        "VoiceAnalyzer: log-mel → one ONNX call\n"
        "→ Scored | Dropped | Failed → publish",
        WORKER,
    )
    views = Box(
        3.7,
        0.9,
        4.4,
        2.5,
        "Ingest: each session's results",
        "SessionView → each modality's view\n"
        "   (face: track ids, smoothing)\n"
        "face_message / voice_message\n"
        "   (emostream/schema.py, schema 1)\n"
        "→ transport outputs (data channel)\n"
        "→ SSE /v1/sessions/{id}/events",
        INGEST,
    )
    repo = Box(
        14.2,
        0.9,
        1.75,
        2.7,
        "Models",
        "models/\n artefacts/\n <name>/\n  <version>/\n  model.onnx\n  model.json\n"
        "aliases.json:\n  production,\n  shadow",
        OUTSIDE,
    )
    for b in (client, ingest, broker, worker, views, repo):
        draw_box(ax, b)

    arrow(ax, client.right(0.6), ingest.left(0.6), "WebRTC:\nvideo, audio", offset=(0, 0.4))
    arrow(ax, ingest.right(0.6), broker.left(0.5), "jobs", offset=(0, 0.22))
    arrow(ax, broker.bottom(-1.0), worker.top(-1.0), "take(B, T)", offset=(-0.05, 0))
    arrow(ax, worker.top(1.0), broker.bottom(1.0), "publish(outcomes)", offset=(0.05, 0))
    arrow(ax, broker.left(-0.8), views.right(0.7), "results(session):\nOutcome", offset=(0.15, 0.1))
    arrow(
        ax,
        views.left(0.0),
        client.bottom(0.0),
        "face / voice / error\nmessages",
        bend=-0.3,
        offset=(-1.1, -0.55),
    )
    arrow(
        ax, repo.left(0.0), worker.right(0.0), "production\n(watched)", dashed=True, offset=(0, 0.5)
    )
    ax.text(
        3.7,
        0.5,
        "/v1/predict and emostream analyze: Job → run_batch → message, no broker",
        fontsize=8.6,
        style="italic",
    )
    ax.text(
        3.7,
        0.15,
        "metrics: every process → /metrics → Prometheus → Grafana (docs/METRICS.md)",
        fontsize=8.6,
        style="italic",
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, bbox_inches="tight")
    plt.close(fig)
    return out


def main(argv: list[str]) -> None:
    print(draw(Path(argv[0]) if argv else OUT))


if __name__ == "__main__":
    main(sys.argv[1:])
