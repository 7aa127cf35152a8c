"""`emostream bench voice`: the voice path's costs, and the two VADs side by side.

1. Each VAD on RAVDESS speech and silence (``voice_vad.py``: how the clips are labelled):
   frame precision / recall / F1 clean and in noise, false positives on synthetic silence,
   window-level agreement, and milliseconds per second of audio on one thread;
2. log-mel features (``models/logmel.py``) per window at batch 1, 8 and 32;
3. the production voice-emotion model per window at batch 1, 8 and 32: the bare model call
   on prepared features and ``Classifier.predict_windows`` (features + call), on real
   RAVDESS windows; when no voice model exists the section says so and what trains one.

It rewrites its section of docs/BENCHMARKS.md. Also runs as ``python -m
emostream.bench.voice`` (argparse, no typer), for a bare GPU machine.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import numpy as np

from emostream.bench.measure import median, repeat_ms, say
from emostream.bench.report import Section, num
from emostream.bench.voice_vad import VadScore, evaluate, ravdess_clips
from emostream.models.logmel import LogMelSpec, log_mel
from emostream.models.repository import ModelMissingError, ModelRepository
from emostream.models.runner import Classifier, RunnerConfig
from emostream.models.vad.base import Vad
from emostream.models.vad.silero import SileroVad
from emostream.models.vad.webrtc import WebRtcVad
from emostream.models.voice import VoiceModelConfig
from emostream.paths import data_root
from emostream.stream.audio import read_audio

SECTION = "Voice (emostream bench voice)"
BATCHES = (1, 8, 32)
WINDOW = 24000  # 1.5 s at 16 kHz: the voice card's window


def _say(msg: str) -> None:
    say("bench voice", msg)


def real_windows(clips: Sequence[Path], n: int) -> np.ndarray:
    """``n`` 1.5 s windows cut from the clips (0.5 s hop), cycling if they give fewer."""
    out: list[np.ndarray] = []
    for path in clips:
        x = read_audio(path)
        out += [x[i : i + WINDOW] for i in range(0, len(x) - WINDOW + 1, 8000)]
        if len(out) >= n:
            break
    if not out:
        raise SystemExit("no RAVDESS windows to time")
    return np.stack([out[i % len(out)] for i in range(n)]).astype(np.float32)


def vads(root: Path, config: VoiceModelConfig) -> list[Vad]:
    """Silero (when pulled) and the WebRTC VAD at each of its modes."""
    out: list[Vad] = []
    try:
        out.append(SileroVad.from_repository(config, root))
    except ModelMissingError as exc:
        _say(f"Silero VAD not measured: {exc}")
    return out + [WebRtcVad(mode, config.vad_threshold) for mode in (0, 1, 2, 3)]


def _vad_rows(scores: Sequence[VadScore], config: VoiceModelConfig) -> list[list[object]]:
    default = "silero" if config.vad == "silero" else f"webrtc mode {config.webrtc_mode}"
    rows: list[list[object]] = []
    for s in scores:
        fpr = max(c.false_positive_rate for c in s.silence.values())
        rows.append(
            [
                f"**{s.name}**" if s.name.startswith(default) else s.name,
                num(s.clean.precision, 3),
                num(s.clean.recall, 3),
                num(s.clean.f1, 3),
                num(s.noisy.precision, 3),
                num(s.noisy.recall, 3),
                num(s.noisy.f1, 3),
                f"{fpr:.2%}",
                f"{s.padding.false_positive_rate:.1%}",
                f"{s.window_agreement:.1%}",
                num(s.ms_per_audio_s, 2),
            ]
        )
    return rows


def _reading(scores: Sequence[VadScore]) -> str:
    """Why the default is what it is, in this run's figures."""
    silero = next((s for s in scores if s.name.startswith("silero")), None)
    webrtc = [s for s in scores if s.name.startswith("webrtc")]
    if silero is None or not webrtc:
        return "Silero was not measured (not pulled): no comparison in this run."
    best = max(webrtc, key=lambda s: s.noisy.f1)
    return (
        f"Reading: in noise Silero keeps F1 {silero.noisy.f1:.2f} against "
        f"{best.noisy.f1:.2f} for the best WebRTC mode ({best.name}), and calls "
        f"{silero.padding.false_positive_rate:.1%} of the noise around the sentences speech "
        f"against {best.padding.false_positive_rate:.1%}; it costs "
        f"{silero.ms_per_audio_s:.1f} CPU ms per second of audio against "
        f"{best.ms_per_audio_s:.2f} ms: about {silero.ms_per_audio_s / 10:.2f}% of one core "
        "per live track. A window wrongly called speech is a wrong emotion sent to a "
        "client: Silero is the default (`voice.vad=silero`); WebRTC needs no model file."
    )


def _cells(times: Sequence[float], batch: int) -> list[object]:
    """ms per batch and per window: the median, and the fastest call in brackets (on a
    shared machine the fastest is the cost without other work in the way)."""
    mid, low = median(times), min(times)
    return [f"{num(mid, 2)} ({num(low, 2)})", f"{num(mid / batch, 3)} ({num(low / batch, 3)})"]


def _timing_rows(classifier: Classifier | None, windows: np.ndarray) -> list[list[object]]:
    spec = classifier.audio.features if classifier is not None else LogMelSpec()
    rows: list[list[object]] = []
    for b in BATCHES:
        batch = windows[:b]
        row: list[object] = [b, *_cells(repeat_ms(partial(log_mel, batch, spec)), b)]
        if classifier is not None:
            tensor = classifier.features(batch)
            row += _cells(repeat_ms(partial(classifier.predict_tensor, tensor)), b)
            row += _cells(repeat_ms(partial(classifier.predict_windows, batch)), b)
        rows.append(row)
    return rows


def run(out: Path, clips: int = 120, command: str = "emostream bench voice") -> str:
    data = data_root()
    ravdess = data / "ravdess" if data else None
    if ravdess is None or not ravdess.is_dir():
        raise SystemExit("bench voice needs RAVDESS: set EMOSTREAM_DATA (see README)")
    section = Section(SECTION, command, out)
    from emostream.settings import Settings

    settings = Settings()
    config = settings.voice
    chosen = ravdess_clips(ravdess, clips)
    _say(f"VADs on {len(chosen)} RAVDESS clips")
    scores = evaluate(vads(settings.model_root, config), chosen, config.min_speech)
    classifier: Classifier | None = None
    missing = ""
    try:
        classifier = Classifier.from_repository(
            ModelRepository(settings.model_root), config.model, config.alias, RunnerConfig()
        )
    except ModelMissingError as exc:
        missing = str(exc)
    providers = classifier.runner.providers if classifier is not None else []
    _say("log-mel and model timings")
    rows = _timing_rows(classifier, real_windows(chosen, max(BATCHES)))
    audio_s = scores[0].clips_s
    section.measured(
        note=f"; load average {section.load_before:.2f} before, {section.load_now:.2f} after: "
        "the machine is shared, so every timing here includes other work"
    ).machine(providers=providers)
    section.sub("Voice activity detection on RAVDESS")
    section.add(
        f"{len(chosen)} RAVDESS clips (16 kHz FLAC, every actor and emotion; "
        f"{audio_s:.0f} s of audio, each clip run clean and with noise), labelled "
        "as `bench/voice_vad.py` says: a clip's speech is the span from its first to its "
        "last 10 ms frame within 35 dB of its loudest (pauses inside count as speech), "
        "the rest silence, 0.1 s either side of each boundary not scored. *noisy*: white "
        "noise 10 dB below the speech level. *silence FP*: the worst share of frames "
        "called speech in 20 s each of white noise at -70 and -50 dBFS and brown noise at "
        f"-50 dBFS. *padding FP*: the share of 1 s of white noise at -70 dBFS before and "
        "after each clean clip called speech (a change of noise floor: RAVDESS' own is "
        "about -60 dBFS). *windows*: the windower's speech flag (1.5 s, hop 0.5 s, speech when "
        f">= {config.min_speech:g} of its VAD frames are) against the same rule on the "
        "reference. Cost: one stream, one thread, CPU ms of VAD (the thread's CPU time, "
        "so other load on the machine does not count) per second of audio. "
        f"Threshold {config.vad_threshold:g}; **bold**: the default (`voice.vad`).",
    )
    section.table(
        [
            "VAD",
            "clean P",
            "clean R",
            "clean F1",
            "noisy P",
            "noisy R",
            "noisy F1",
            "silence FP",
            "padding FP",
            "windows agree",
            "CPU ms / audio s",
        ],
        _vad_rows(scores, config),
    )
    section.add(_reading(scores))
    section.sub("Log-mel features and the voice model, per window")
    header = ["batch", "log-mel ms/batch", "log-mel ms/window"]
    if classifier is not None:
        header += ["model ms/batch", "model ms/window", "features+model ms/batch", "ms/window"]
        section.add(
            f"`{classifier.card.ref}` on {classifier.runner.providers[0]}, real RAVDESS "
            "windows of 1.5 s; each cell the median of at least 10 calls and 0.75 s, the "
            "fastest call in brackets."
        )
    else:
        section.add(f"No voice model to time: {missing}. Log-mel features only.")
    section.table(header, rows)
    return section.write()


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=Path("docs/BENCHMARKS.md"))
    p.add_argument("--clips", type=int, default=120)
    args = p.parse_args(argv)
    command = "python -m emostream.bench.voice " + shlex.join(sys.argv[1:])
    print(run(args.out, args.clips, command.strip()))


if __name__ == "__main__":
    main()
