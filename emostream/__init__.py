"""emostream: real-time emotion detection from WebRTC media on ONNX Runtime.

Subpackages map to the repository's top-level folders (docs/ARCHITECTURE.md, "Layout"):
``emostream.stream`` (ingest), ``emostream.models`` (inference), ``emostream.training``.
"""

__version__ = "0.1.0"
