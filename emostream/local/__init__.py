"""One machine, all its cores, no Redis: ``emostream serve --processes N``.

A parent (``supervisor``) binds the public port and starts N ingest processes that all
accept on it and M inference processes; decoded frames and audio windows travel from an
ingest to an inference process through shared memory (``arena``), with only a small
reference on the local broker (``hub``, in the parent). docs/ARCHITECTURE.md draws it.
"""
