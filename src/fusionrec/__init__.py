"""fusionrec: an MLOps platform for multi-modal (text + image) recommendation."""

__version__ = "0.1.0"
