"""cosface: train, evaluate, export and serve CosFace face-recognition models."""

__version__ = "0.1.0"
