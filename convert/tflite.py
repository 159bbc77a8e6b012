"""One SavedModel signature -> one .tflite flatbuffer, for each quantisation scheme.

float32   no change
float16   weights stored as float16 (half the size), computed in float32 on CPU
dynamic   weights int8, activations float (quantised on the fly); TF >= 2.18 writes FULLY_CONNECTED v12,
          which tflite-runtime 2.14 cannot load
int8      weights and activations int8, calibrated on real data; int8 inputs/outputs (uint8 image)
edgetpu   int8 with static shapes and only Edge TPU-mappable ops (see convert/edgetpu.py)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import tensorflow as tf

from scenecap import ScenecapError
from scenecap.edge.bundle import QUANTS

log = logging.getLogger("scenecap.convert")


def convert_signature(saved_model: str | Path, signature: str, quant: str,
                      representative: Callable[[], Iterable[dict]] | None = None,
                      io_type: str = "int8") -> bytes:
    """Convert one signature of the SavedModel. `representative` yields dicts keyed by the signature's inputs."""
    if quant not in QUANTS:
        raise ScenecapError(f"--quant {quant!r} unknown; expected one of {', '.join(QUANTS)}")
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=[signature])
    if quant == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif quant == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quant in ("int8", "edgetpu"):
        if representative is None:
            raise ScenecapError(f"{signature}: full-integer int8 needs calibration data; none was given")
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dtype = {"int8": tf.int8, "uint8": tf.uint8}[io_type]
        conv.inference_input_type = dtype
        conv.inference_output_type = dtype
    try:
        return conv.convert()
    except Exception as e:  # the converter raises many types; the first line says what went wrong
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ScenecapError(f"{saved_model} [{signature}] -> {quant}: conversion failed ({first})") from None
