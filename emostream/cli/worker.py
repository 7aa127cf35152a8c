"""``emostream worker``: a batching inference worker for the Redis broker."""

from __future__ import annotations

import logging

from emostream.cli.common import EXIT_MODEL_MISSING, EXIT_USAGE, fail
from emostream.cli.options import setting, with_settings
from emostream.settings import Settings


@with_settings(
    setting("broker.url", "--broker"),
    setting("worker.metrics_port"),
    setting("worker.metrics_host"),
    setting("worker.name", "--name"),
    setting("worker.max_batch", "--max-batch"),
    setting("log_level"),
)
def worker(settings: Settings) -> None:
    """A batching inference worker for the Redis broker (run as many as you like)."""
    import asyncio

    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    from emostream.models.logmel import one_blas_thread
    from emostream.models.repository import ModelMissingError
    from emostream.models.worker_node import load_analyzers, run_worker

    try:  # a missing optional model (voice) is a warning; a missing face model exits 3
        analyzers = load_analyzers(settings)
    except ModelMissingError as exc:
        raise fail(str(exc), EXIT_MODEL_MISSING) from None
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    one_blas_thread()
    try:
        asyncio.run(run_worker(settings, analyzers))
    except ValueError as exc:
        raise fail(str(exc), EXIT_USAGE) from None
    except OSError as exc:  # e.g. the metrics port is taken
        raise fail(str(exc), EXIT_USAGE) from None
