"""Face detector plugins: one module each, found by ``emostream.models.detectors``.

A plugin is a file here holding its pydantic config (a subclass of ``DetectorConfigBase``
whose ``type`` literal names it; the file is named after it) and a ``FaceDetector``
subclass naming that config in ``config_class``. Nothing else lives here: shared code
(BlazeFace's model, letterbox, SSD decoding, tiles) sits beside this folder, in
``models/detectors/``. A plugin that fails to import (a missing package, a bug) is reported
under ``emostream.models.detectors.UNAVAILABLE`` and the others stay available.
"""
