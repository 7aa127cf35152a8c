"""The Broker between ingest and inference (docs/ARCHITECTURE.md, "Data flow").

Two roles (``base.IngestBroker``: open, close, submit, results; ``base.WorkerBroker``:
take, publish, depth) and two implementations: ``memory`` (asyncio, the worker in the same
process, the embedded default; one object plays both roles) and ``redis`` (Redis Streams,
any number of worker processes: ``redis_ingest`` and ``redis_worker`` over the shared
``redis_link``, ``lua`` and ``wire``).
"""
