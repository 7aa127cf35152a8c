"""Inference side: the versioned model repository, ONNX Runtime runner, detectors, pipeline.

This folder is also the default model repository root: ``<name>/<version>/model.onnx``
plus ``model.json`` (the card), and ``<name>/aliases.json`` naming ``production``.
"""
