"""The Genesys Cloud AudioHook transport (protocol version 2): a contact centre streams
each call's two sides over one WebSocket, ``GET /v1/audiohook``.

- ``route.py``: the endpoint and who gets a socket (API key, signature, quotas).
- ``auth.py``: the API key and the HTTP message signature (``structured_fields.py``).
- ``server.py``: one connection's protocol state machine, ``open`` to ``closed``.
- ``messages.py``: the protocol's messages; ``codec.py``: PCMU and L16 frames;
  ``audio.py``: the channels as session tracks (external: customer, internal: agent).

Its settings are ``audiohook.*`` (``stream/audiohook_config.py``).
"""
