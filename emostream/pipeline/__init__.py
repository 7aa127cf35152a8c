"""The typed objects that flow through the pipeline, whatever the modality.

A ``Job`` goes from ingest to an analyzer (through a broker, or directly for ``/v1/predict``
and ``emostream analyze``); what comes back is one ``Outcome``: ``Scored``, ``Dropped`` or
``Failed``. A session's result stream may also carry a ``BrokerNotice``. ``run_batch`` is
the one inference path, and ``face_message`` the one way a scored frame becomes the
face message of docs/ARCHITECTURE.md.
"""
