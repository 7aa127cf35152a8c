"""Voice activity detection: which 16 kHz samples hold speech, so silence is never classified.

Two plugins behind one small interface (``base.py``): Silero VAD (its MIT-licensed ONNX
file, taken from the ``silero-vad`` wheel by ``emostream models pull voice-activity``, run
on ONNX Runtime) and the WebRTC VAD (``webrtcvad-wheels``, a C library, no model file).
``voice.vad`` (``EMOSTREAM_VOICE__VAD``) picks one; docs/ARCHITECTURE.md says which is the
default and why, with the figures from ``emostream bench voice``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from emostream.models.vad.base import Vad, VadStream

if TYPE_CHECKING:
    from emostream.models.voice import VoiceModelConfig

__all__ = ["Vad", "VadStream", "create_vad"]


def create_vad(config: VoiceModelConfig, model_root: Path) -> Vad:
    """The VAD ``config`` names (raises ``ModelMissingError`` when Silero is not pulled)."""
    if config.vad == "webrtc":
        from emostream.models.vad.webrtc import WebRtcVad

        return WebRtcVad.from_config(config)
    from emostream.models.vad.silero import SileroVad

    return SileroVad.from_repository(config, model_root)
