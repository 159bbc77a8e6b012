"""One SavedModel signature -> one .tflite flatbuffer, for each quantisation scheme.

float32      no change
float16      weights stored as float16 (half the size), computed in float32 on CPU
dynamic      weights int8, activations float (quantised on the fly); TF >= 2.18 writes per-channel dense layers
             as FULLY_CONNECTED v12, which tflite-runtime 2.14 cannot load; `per_tensor_dense` gives v9
int8         weights and activations int8, calibrated on real data; int8 inputs/outputs (the uint8 image of the
             `encode` signature stays uint8 and is cast in the graph: fine on a CPU)
int16x8      int16 activations, int8 weights (decoder step only), float32 inputs/outputs; LiteRT runs it on its
             reference kernels, several times slower than int8 or float32
edgetpu      int8 from the Edge TPU signatures (encode_pixels, decode_step_embedded): static shapes, only
             TPU-mappable ops, a quantised uint8 image input (scale/zero point in the manifest) and int8 elsewhere.
             Its decoder step's ranges are chosen for the caption loop (selective.integer_decoder_ranges): one
             symmetric range for the hidden state in and out, and logits from 0 up
Decoder-step recipes that keep parts of an int8 step float (selective quantisation, convert/selective.py), with
int8 weights everywhere (float layers run the `dynamic` kernels):
int8-fstate  the carried state: hidden in and new_hidden out float32, the GRU's gate arithmetic float
int8-fattn   the attention softmax and the weighted sum of the features (and the attention output) float
int8-mixed   int8 where it costs no captions (the attention scores over every location, the GRU's input matmul);
             float activations for the attention softmax and context, the GRU's recurrent matmul and gates, and
             the output layers; hidden in and new_hidden out float32
Every float model's one-unit dense layers (the attention score) then run as MUL+SUM (convert/single_output_dense.py),
and every embedding lookup reads its token id without Keras's negative-id wrap (convert/token_lookup.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import tensorflow as tf

from scenecap import ScenecapError
from scenecap.convert.selective import (
    SELECTIVE,
    float_nodes,
    hybrid_weights,
    integer_decoder_ranges,
    integer_edges,
    set_ranges,
)
from scenecap.convert.single_output_dense import reduce_single_output_dense
from scenecap.convert.token_lookup import drop_negative_index_wrap
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
    calibrated_path = quant in SELECTIVE or (quant == "edgetpu" and signature.startswith("decode_step"))
    if calibrated_path or quant in ("int8", "edgetpu", "int16x8"):
        if representative is None:
            raise ScenecapError(f"{signature}: {quant} needs calibration data; none was given")
    try:
        if calibrated_path:
            model = _from_calibrated(saved_model, signature, quant, representative, per_tensor_dense)
        else:
            model = _converter(saved_model, signature, quant, representative, io_type, input_type,
                               per_tensor_dense).convert()
    except ScenecapError:
        raise
    except Exception as e:  # the converter raises many types; the first line says what went wrong
        raise ScenecapError(f"{saved_model} [{signature}] -> {quant}: conversion failed ({first_line(e)})") from None
    model, rewritten = reduce_single_output_dense(model)
    if rewritten:
        log.info("%s [%s]: %d one-unit dense layer(s) (the attention score) as MUL+SUM", signature, quant, rewritten)
    model, unwrapped = drop_negative_index_wrap(model)
    if unwrapped:
        log.info("%s [%s]: %d embedding lookup(s) without the negative-id wrap", signature, quant, unwrapped)
    return model


def _converter(saved_model: str | Path, signature: str, quant: str, representative, io_type: str,
               input_type: str | None, per_tensor_dense: bool) -> tf.lite.TFLiteConverter:
    """The TFLite converter set up for one of the plain quantisations."""
    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=[signature])
    if quant == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif quant == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif quant in ("int8", "edgetpu"):
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        dtypes = {"int8": tf.int8, "uint8": tf.uint8}
        conv.inference_input_type = dtypes[input_type or io_type]
        conv.inference_output_type = dtypes[io_type]
    elif quant == "int16x8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        # Inputs and outputs stay float32: the hidden state carried from step to step is not re-quantised.
        conv.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    if per_tensor_dense:
        # Public converter attribute (TF >= 2.14); per-tensor dense weights use the older kernel versions.
        conv._experimental_disable_per_channel_quantization_for_dense_layers = True
    return conv


def _from_calibrated(saved_model: str | Path, signature: str, quant: str, representative,
                     per_tensor_dense: bool) -> bytes:
    """Calibrate, choose what to change in the calibrated float model, then quantise it.

    This is the path TF's own tf.lite.experimental.QuantizationDebugger takes (a calibrate-only conversion, then
    mlir_quantize with denylisted nodes for get_nondebug_quantized_model): the converter has no other way to keep
    chosen ops float or to set a tensor's range."""
    from tensorflow.lite.python import convert as tfl_convert

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model), signature_keys=[signature])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    # Edge TPU: integer kernels only; a selective model needs the float ones for its float parts.
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if quant == "edgetpu"
                                      else tf.lite.OpsSet.TFLITE_BUILTINS]
    conv._experimental_calibrate_only = True
    calibrated = conv.convert()
    if quant == "edgetpu":
        calibrated = set_ranges(calibrated, integer_decoder_ranges(calibrated))
        return tfl_convert.mlir_quantize(calibrated, input_data_type=tf.int8, output_data_type=tf.int8,
                                         disable_per_channel_for_dense_layers=per_tensor_dense)
    parts = SELECTIVE[quant]
    model = tfl_convert.mlir_quantize(calibrated, denylisted_nodes=float_nodes(calibrated, parts),
                                      disable_per_channel_for_dense_layers=per_tensor_dense)
    keep = ("hidden", "new_hidden") if "state" in parts else ()
    return hybrid_weights(integer_edges(model, keep), per_channel=not per_tensor_dense)
