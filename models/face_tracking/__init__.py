"""Per-session face state, in one place: which boxes a frame has and which face is which.

``schedule`` (``FaceTracks``, worker side) decides per frame whether to run the detector or
carry the last boxes by optical flow (``flow``); ``ids`` (``IouTracker``, session side)
gives each face a ``track_id`` that follows it across frames, matching boxes against each
track's Kalman-predicted box (``motion``). Both are soft state: losing them costs one
detection or one new id, never a wrong score.
"""
