"""Ways media reaches a session: one module (or package) per protocol.

Each transport opens sessions through the ``SessionManager``, adds their tracks
(``MediaTrack``: a name, a kind, a role, decoded frames) and outputs, and says what to do
when a session ends; windows, VAD, the broker, results, SSE, limits, the idle timeout and
metrics belong to the session and know nothing of the transport.

- ``webrtc/``: aiortc peer connections behind WHIP and ``/v1/offer`` (the only aiortc user).
- ``audiohook/``: Genesys Cloud AudioHook calls over a WebSocket, ``/v1/audiohook``.
- ``local.py``: frames and PCM handed over in-process (tests, embedding).
- ``twilio/``: Twilio Media Streams, μ-law over a WebSocket (``GET /v1/twilio``).
"""
