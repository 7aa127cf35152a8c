"""The Broker between ingest and inference (DESIGN.md "Data flow").

One interface (``base.Broker``), two implementations: ``memory`` (asyncio, worker in the
same process, the embedded default) and, later, ``redis`` (Redis Streams, any number of
worker processes). Ingest calls ``submit``; workers call ``take`` and ``publish``; each
session reads its own results with ``results``.
"""
