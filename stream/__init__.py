"""Ingest side: media decode, the HTTP API (FastAPI), and later the WebRTC sessions."""
