"""Built-in plugin ``lesion-detector``: focal hyperdense round lesions on CT (torch, CPU)."""

from ai_plugins.builtin.lesion_detector.plugin import LesionDetector

__all__ = ["LesionDetector"]
