"""How a manifest's sections fit together: the encoder's outputs feed the decoder step, the decoder's batch is the
manifest's, the image is what preprocessing makes, the word input matches its table, token ids fit the logits.

The tensors are the source: the dimensions the `model` section also records (locations, units, vocab_size) must
agree with them. Each misfit is one ScenecapError line naming the manifest and the tensors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from scenecap.edge.export_contract import LOG_NORM
from scenecap.edge.manifest_fields import err, key

if TYPE_CHECKING:
    from scenecap.edge.manifest import DecoderSpec, EmbeddingTable, ModelDims
    from scenecap.edge.manifest_models import ModelSpec, TensorSpec
    from scenecap.edge.preprocess import PreprocessSpec


def check_shapes(models: dict[str, ModelSpec], pre: PreprocessSpec, dims: ModelDims, decoder: DecoderSpec,
                 tokens: dict[str, int], where: str) -> None:
    """`where`: the manifest file, for messages."""
    enc, dec, batch = models["encoder"], models["decoder_step"], decoder.batch
    feats, keys = _encoder_io(enc, pre, where)
    units = _decoder_state(dec, feats, keys, batch, where)
    logits = _need(dec, "output", "logits", where, "decoder_step")
    if len(logits.shape) != 2 or logits.shape[0] != batch:
        raise err(where, f"models.decoder_step output logits has shape {logits.shape}; expected [{batch}, vocab]")
    vocab_size = logits.shape[1]
    _expect(_need(dec, "output", "new_hidden", where, "decoder_step"), [batch, units],
            "models.decoder_step output new_hidden", where)
    _expect(_need(dec, "output", "attention", where, "decoder_step"), [batch, feats.shape[1]],
            "models.decoder_step output attention", where)
    _log_norm(dec, batch, where)
    for name, value in (("vocab_size", vocab_size), ("locations", feats.shape[1]), ("units", units)):
        recorded = getattr(dims, name)
        if recorded is not None and recorded != value:
            raise err(where, f"model.{name} is {recorded} but the models use {value}")
    _word_input(dec, decoder.embedding, batch, vocab_size, where)
    for role, idx in tokens.items():
        if not 0 <= idx < vocab_size:
            raise err(where, f"{key('tokens', role)} = {idx} is outside the vocabulary (0..{vocab_size - 1})")


def _need(spec: ModelSpec, kind: str, name: str, where: str, model: str) -> TensorSpec:
    tensors = spec.inputs if kind == "input" else spec.outputs
    t = tensors.get(name)
    if t is None:
        raise err(where, f"models.{model} has no {kind} {name!r} (it has {sorted(tensors)})")
    return t


def _expect(t: TensorSpec, shape: list[int], what: str, where: str) -> None:
    if t.shape != shape:
        raise err(where, f"{what} has shape {t.shape}; expected {shape}")


def _log_norm(dec: ModelSpec, batch: int, where: str) -> None:
    """The optional log_norm output (each logits row's log-sum-exp): float32 [batch]. A quantised one is refused:
    a word's log-probability is its logit minus log_norm, and int8 steps of it would swamp the difference."""
    norm = dec.outputs.get(LOG_NORM)
    if norm is not None and (norm.shape != [batch] or norm.dtype != "float32"):
        raise err(where, f"models.decoder_step output {LOG_NORM} is {norm.dtype}{norm.shape}; expected "
                  f"float32[{batch}] (each logits row's log-sum-exp)")


def _encoder_io(enc: ModelSpec, pre: PreprocessSpec, where: str) -> tuple[TensorSpec, TensorSpec]:
    """The encoder's image is what preprocessing makes; its (features, keys) are [1, locations, *]."""
    image = _need(enc, "input", "image", where, "encoder")
    if image.shape != [1, pre.height, pre.width, 3]:
        raise err(where, f"models.encoder input image is {image.shape}; preprocess says "
                  f"[1, {pre.height}, {pre.width}, 3]")
    feats, keys = _need(enc, "output", "features", where, "encoder"), _need(enc, "output", "keys", where, "encoder")
    if len(feats.shape) != 3 or len(keys.shape) != 3 or feats.shape[0] != 1 or keys.shape[:2] != feats.shape[:2]:
        raise err(where, f"models.encoder outputs features {feats.shape} and keys {keys.shape}; expected "
                  "[1, locations, feature_dim] and [1, locations, attention_dim]")
    return feats, keys


def _decoder_state(dec: ModelSpec, feats: TensorSpec, keys: TensorSpec, batch: int, where: str) -> int:
    """The decoder step's hidden, features and keys inputs are [batch, ...] of the encoder's: its units."""
    hidden = _need(dec, "input", "hidden", where, "decoder_step")
    if len(hidden.shape) != 2:
        raise err(where, f"models.decoder_step input hidden has shape {hidden.shape}; expected [batch, units]")
    units = hidden.shape[1]
    _expect(hidden, [batch, units], f"models.decoder_step input hidden (decoder.batch {batch})", where)
    _expect(_need(dec, "input", "features", where, "decoder_step"), [batch, *feats.shape[1:]],
            "models.decoder_step input features", where)
    _expect(_need(dec, "input", "keys", where, "decoder_step"), [batch, *keys.shape[1:]],
            "models.decoder_step input keys", where)
    return units


def _word_input(dec: ModelSpec, table: EmbeddingTable | None, batch: int, vocab_size: int, where: str) -> None:
    """A token input (int32[batch]) and no word table, or an embedding input and the table it is looked up in."""
    if "token" in dec.inputs:
        token = dec.inputs["token"]
        if token.shape != [batch] or token.dtype not in ("int32", "int64"):
            raise err(where, f"models.decoder_step input token is {token.dtype}{token.shape}; expected int32[{batch}]")
        if table is not None:  # the captioner would look words up for a token input
            raise err(where, "decoder.embedding (a word table) is given but models.decoder_step takes a token "
                      "input; expected the table only for a decoder with an embedding input")
    elif "embedding" in dec.inputs:
        _embedding_input(dec.inputs["embedding"], table, batch, vocab_size, where)
    else:
        raise err(where, "models.decoder_step needs a token or an embedding input")


def _embedding_input(emb_in: TensorSpec, table: EmbeddingTable | None, batch: int, vocab_size: int,
                     where: str) -> None:
    """The table is [vocabulary, embed_dim] of the input's embed_dim, and quantised as the input is."""
    if table is None:
        raise err(where, "models.decoder_step takes an embedding input but decoder.embedding (the lookup "
                  "table) is missing")
    if len(emb_in.shape) != 2 or emb_in.shape[0] != batch:  # checked before indexing: a file may say []
        raise err(where, f"models.decoder_step input embedding has shape {emb_in.shape}; expected "
                  f"[{batch}, embed_dim]")
    if table.shape != [vocab_size, emb_in.shape[1]]:
        raise err(where, f"decoder.embedding.shape {table.shape!r} does not fit the decoder input embedding "
                  f"{emb_in.shape} and vocabulary {vocab_size}")
    if (table.dtype, table.scale, table.zero_point) != (emb_in.dtype, emb_in.scale, emb_in.zero_point):
        raise err(where, "decoder.embedding dtype/scale/zero_point differ from the decoder's embedding input")
