"""Twilio Media Streams: a call's audio over a WebSocket (``GET /v1/twilio``).

TwiML ``<Start><Stream url="wss://…/v1/twilio" track="both_tracks"/></Start>`` makes Twilio
open a WebSocket to us and send JSON messages: ``connected``, ``start`` (the stream's and
the call's ids, the tracks, the media format, custom parameters), ``media`` (20 ms of
μ-law 8 kHz audio, base64, per track), ``dtmf``, ``mark`` and ``stop``. Each stream is one
session (its id is the ``streamSid``); the inbound track is the customer, the outbound one
the agent.

- ``config.py``: ``EMOSTREAM_TWILIO__*`` (auth token, public URL, limits).
- ``auth.py``: who may open a stream: ``X-Twilio-Signature`` or an API token, before the
  socket is accepted.
- ``messages.py``: the messages, checked (shape, sequence numbers, media format) and the
  μ-law decoding.
- ``stream.py``: the route and one connection's life: session, tracks, close codes.

Nothing here is imported by this ``__init__``: the settings import ``config`` alone.
"""
