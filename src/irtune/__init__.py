"""irtune: a reproducible DVC + Hydra + MLflow pipeline that fine-tunes retrieval models."""

__version__ = "0.1.0"
