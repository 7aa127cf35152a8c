"""WebRTC: aiortc peer connections (``peer``), WHIP and the JSON offer (``signalling``), the
offer validator (``sdp``) and the receivers' fixed REMB (``remb``)."""
