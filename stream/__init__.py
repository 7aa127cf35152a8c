"""Ingest side: the HTTP API (FastAPI), WebRTC signalling and sessions, media decode, the
demo page and the Python client."""
