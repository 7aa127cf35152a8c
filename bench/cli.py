"""``emostream bench …``: the benchmark commands, registered by the core CLI as a sub-app.

The core CLI imports this module on every start, so it imports nothing heavy (matplotlib,
onnxruntime, aiortc): each command imports its bench when it runs.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Benchmarks that write docs/BENCHMARKS.md.")

# After ``app``: emostream.cli registers ``app`` when it is first imported, and that may be now.
from emostream.cli.common import EXIT_USAGE, fail  # noqa: E402
from emostream.extras import require  # noqa: E402


def _numbers(option: str, text: str, example: str = "1,4,8") -> list[int]:
    try:
        values = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise fail(f"{option} {text!r}: give numbers like {example}", EXIT_USAGE) from None
    if not values or min(values) < 1:
        raise fail(f"{option} needs positive numbers", EXIT_USAGE)
    return values


@app.command("face")
def bench_face(
    out: Path = typer.Option(Path("docs/BENCHMARKS.md"), envvar="EMOSTREAM_BENCH_OUT"),
    frames: int = typer.Option(200, min=10, help="frames of woman2.mp4 to time"),
    skip_fer: bool = typer.Option(False, help="only our pipeline (no TensorFlow venv)"),
    versions: str | None = typer.Option(
        None,
        help="face-emotion versions or aliases to time on one core, comma-separated "
        "(e.g. 1,2 or production); default: every version in the repository",
    ),
) -> None:
    """Faces/s at batch 1-64 and per-frame detect+classify, side by side with fer; every
    face-emotion version alone on one core."""
    require("matplotlib", "onnx", "h5py", extra="bench")
    from emostream.bench.face import run
    from emostream.bench.face_versions import UnknownVersionError

    chosen = [v.strip() for v in versions.split(",") if v.strip()] if versions else None
    if versions is not None and not chosen:
        raise fail("--versions needs at least one version, like 1,2", EXIT_USAGE)
    try:
        typer.echo(run(out=out, frames=frames, skip_fer=skip_fer, versions=chosen))
    except UnknownVersionError as exc:
        raise fail(str(exc), EXIT_USAGE) from None


@app.command("detectors")
def bench_detectors(
    plot: Path = typer.Option(
        Path("docs/bench-detectors.png"), help="precision/recall chart of every candidate"
    ),
    only: str = typer.Option(
        "", help="comma-separated candidate names to run (e.g. 'yunet near,haar'); all if empty"
    ),
    gpu: bool = typer.Option(
        False,
        "--gpu",
        help="ONNX Runtime detectors on CUDA first (providers unset) where it has it",
    ),
) -> None:
    """Face detector candidates on the hand-labelled boxes (bench/face_boxes): AP, recall
    by face size, false positives per image, calibrated threshold, ms per frame on one
    core; prints a markdown table."""
    from emostream.bench.detector_table import main

    main(plot, [n.strip() for n in only.split(",") if n.strip()], gpu)


@app.command("voice")
def bench_voice(
    out: Path = typer.Option(Path("docs/BENCHMARKS.md"), envvar="EMOSTREAM_BENCH_OUT"),
    clips: int = typer.Option(120, min=5, help="RAVDESS clips for the VAD comparison"),
) -> None:
    """VAD quality and cost per audio second (Silero, WebRTC), log-mel and voice model
    ms per window at batch 1/8/32."""
    from emostream.bench.voice import run

    typer.echo(run(out=out, clips=clips))


@app.command("stream")
def bench_stream(
    clients: str = typer.Option("1,8,16,24", help="client counts, comma-separated"),
    seconds: float = typer.Option(20.0, min=1.0, help="measuring window per count"),
    out: Path = typer.Option(Path("docs/BENCHMARKS.md"), envvar="EMOSTREAM_BENCH_OUT"),
    broker: str = typer.Option(
        "memory",
        help="'memory', or redis://127.0.0.1:PORT/0: the bench then runs its own "
        "redis-server there, W worker processes, and the memory broker for comparison",
    ),
    workers: str = typer.Option("1,2,3", help="with --broker redis://…: worker counts"),
    audio: bool = typer.Option(
        False, help="audio-only calls (RAVDESS speech loop, Opus) instead of video clients"
    ),
    processes: str = typer.Option(
        "1",
        help="serve --processes values, comma-separated (e.g. 1,2): each with the same "
        "clients, in a section of its own",
    ),
    runs: int = typer.Option(1, min=1, help="runs of every (processes, clients) point"),
) -> None:
    """N concurrent WebRTC clients (640x480@15 fps, real video) in a private namespace;
    with --audio, N audio-only calls (p99 from window end to voice message); with
    --processes or --runs, each load against each number of server processes, R times."""
    counts = _numbers("--clients", clients)
    layouts = _numbers("--processes", processes, "1,2")
    if layouts != [1] or runs > 1:
        if broker != "memory":
            raise fail("--processes and --runs measure the embedded broker only", EXIT_USAGE)
        from emostream.bench import stream_procs

        kind = stream_procs.AUDIO if audio else stream_procs.VIDEO
        typer.echo(stream_procs.run(kind, layouts, counts, runs, seconds, out))
        return
    if audio:
        if broker != "memory":
            raise fail("--audio measures the embedded broker only", EXIT_USAGE)
        from emostream.bench import stream_audio

        typer.echo(stream_audio.run(counts, seconds=seconds, out=out))
        return
    if broker == "memory":
        from emostream.bench.stream import run

        typer.echo(run(counts, seconds=seconds, out=out))
        return
    from emostream.bench import scaleout

    try:
        scaleout.check_redis_url(broker)
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    typer.echo(scaleout.run(counts, _numbers("--workers", workers), broker, seconds, out))


@app.command("uploads")
def bench_uploads(
    clients: int = typer.Option(1, min=1, help="live WebRTC sessions"),
    uploads: int = typer.Option(8, min=1, help="concurrent 40 MP WebP uploads to /v1/predict"),
    seconds: float = typer.Option(10.0, min=1.0, help="each measuring window, at least"),
    baseline: Path | None = typer.Option(
        None, help="another checkout's source root: its server is measured too (before a change)"
    ),
    out: Path = typer.Option(Path("docs/BENCHMARKS.md"), envvar="EMOSTREAM_BENCH_OUT"),
) -> None:
    """Live sessions' p50/p99/drops without and with a burst of large uploads beside them,
    and the server's peak memory, in a private network namespace (issue 24)."""
    from emostream.bench.uploads import run

    typer.echo(run(clients, uploads, seconds, out, baseline))


@app.command("calls")
def bench_calls(
    transport: str = typer.Option("audiohook", help="audiohook, twilio or webrtc"),
    calls: str = typer.Option("1,25,50,100", help="concurrent call counts, comma-separated"),
    seconds: float = typer.Option(20.0, min=1.0, help="measuring window per count"),
    out: Path = typer.Option(Path("docs/BENCHMARKS.md"), envvar="EMOSTREAM_BENCH_OUT"),
) -> None:
    """N concurrent two-role calls (stereo 8 kHz RAVDESS speech, both roles analysed) over
    one call transport, in a private namespace: p50/p99 from window end to voice message,
    windows dropped, CPU per call."""
    from emostream.bench import calls as bench

    if transport not in bench.TRANSPORTS:
        raise fail(f"--transport is one of {', '.join(bench.TRANSPORTS)}", EXIT_USAGE)
    typer.echo(bench.run(transport, _numbers("--calls", calls), seconds=seconds, out=out))


@app.command("soak")
def bench_soak(
    minutes: float = typer.Option(30.0, min=0.1, help="length of the loop, per broker"),
    broker: str = typer.Option("both", help="memory, redis or both"),
    sessions: int = typer.Option(4, min=1, help="sessions open at once"),
    seed: int = typer.Option(12, help="seeds the sessions' lengths and endings"),
    interval: float = typer.Option(5.0, min=0.5, help="seconds between samples"),
    out: Path = typer.Option(Path("docs/BENCHMARKS.md"), envvar="EMOSTREAM_BENCH_OUT"),
) -> None:
    """Sessions opened, streamed and closed in a loop; memory, threads, fds, tasks drawn.

    Also writes soak.png and soak.json beside --out. Exits 1 when a session failed or got
    no message (the section is written all the same).
    """
    require("matplotlib", extra="bench")
    from emostream.bench import soak

    if broker not in ("memory", "redis", "both"):
        raise fail(f"--broker {broker!r}: memory, redis or both", EXIT_USAGE)
    brokers = list(soak.BROKERS) if broker == "both" else [broker]
    section, ok = soak.run(brokers, minutes, sessions, seed, interval, out)
    typer.echo(section)
    if not ok:
        raise typer.Exit(1)


@app.command("worker")
def bench_worker(
    batches: str = typer.Option("1,2,4,8,16,32,64,128,256", help="batch sizes, comma-separated"),
    repeats: int = typer.Option(50, min=1, help="timed calls per batch size"),
    out: Path = typer.Option(Path("docs/BENCHMARKS.md"), envvar="EMOSTREAM_BENCH_OUT"),
    providers: str | None = typer.Option(
        None, envvar="EMOSTREAM_PROVIDERS", help="e.g. CUDAExecutionProvider,CPUExecutionProvider"
    ),
) -> None:
    """Faces/s of the worker's classifier at batch 1…256 on this machine's provider."""
    require("matplotlib", extra="bench")
    from emostream.bench.batch_sizes import run_worker_bench

    sizes = _numbers("--batches", batches, "1,8,64")
    chosen = [p.strip() for p in providers.split(",") if p.strip()] if providers else None
    bench = run_worker_bench(
        sizes,
        repeats,
        out,
        chosen,
        chart=out.parent / "bench-worker.png",
        command=f"emostream bench worker --batches {batches} --repeats {repeats}",
    )
    typer.echo(bench.section)


if __name__ == "__main__":
    app()
