"""scenecap: train an attention captioner, quantise it to LiteRT, caption live on the edge.

The architecture is the folder layout: ``train/`` (TensorFlow, workstation), ``convert/`` (SavedModel ->
.tflite bundle), ``edge/`` (the on-device runtime, no TensorFlow), ``benchmarks/``.
"""

__version__ = "0.1.0"


class ScenecapError(Exception):
    """An error a user can act on; its message is one line naming the file or value and what was expected."""
