"""One SavedModel signature -> one .tflite flatbuffer, for each quantisation scheme.

float32   no change
float16   weights stored as float16 (half the size), computed in float32 on CPU
dynamic   weights int8, activations float (quantised on the fly); TF >= 2.18 writes per-channel dense layers
          as FULLY_CONNECTED v12, which tflite-runtime 2.14 cannot load; `per_tensor_dense` gives v9
int8      weights and activations int8, calibrated on real data; int8 inputs/outputs (the uint8 image of the
          `encode` signature stays uint8 and is cast in the graph: fine on a CPU)
edgetpu   int8 from the Edge TPU signatures (encode_pixels, decode_step_embedded): static shapes, only
          TPU-mappable ops, a quantised uint8 image input (scale/zero point in the manifest) and int8 elsewhere
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import tensorflow as tf

from scenecap import ScenecapError
from scenecap.edge.bundle import QUANTS
from scenecap.edge.errors import first_line

log = logging.getLogger("scenecap.convert")


def convert_signature(saved_model: str | Path, signature: str, quant: str,
                      representative: Callable[[], Iterable[dict]] | None = None,
                      io_type: str = "int8", input_type: str | None = None, per_tensor_dense: bool = False) -> bytes:
    """Convert one signature of the SavedModel. `representative` yields dicts keyed by the signature's inputs.

    io_type: int8|uint8 for the quantised inputs and outputs of int8/edgetpu models; input_type overrides it
    for the inputs (the Edge TPU encoder takes uint8 pixels). per_tensor_dense: one weight scale per dense layer.
    """
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
        dtypes = {"int8": tf.int8, "uint8": tf.uint8}
        conv.inference_input_type = dtypes[input_type or io_type]
        conv.inference_output_type = dtypes[io_type]
    elif quant == "int16x8":
        if representative is None:
            raise ScenecapError(f"{signature}: int16x8 needs calibration data; none was given")
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        # Inputs and outputs stay float32: the hidden state carried from step to step is not re-quantised.
        conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    if per_tensor_dense:
        # Public converter attribute (TF >= 2.14); per-tensor dense weights use the older kernel versions.
        conv._experimental_disable_per_channel_quantization_for_dense_layers = True
    try:
        return conv.convert()
    except Exception as e:  # the converter raises many types; the first line says what went wrong
        raise ScenecapError(f"{saved_model} [{signature}] -> {quant}: conversion failed ({first_line(e)})") from None
