"""Bad-input catalogue, training configuration: TOML and YAML config files (and a run's config.json), command
line options and --set KEY=VALUE overrides, through train/cli.resolve_train_config and config.check_values (which
`scenecap train` runs before reading any data), plus `scenecap train` itself for the command-line contract.

Every case is refused in one line naming the file, key or value and what was expected (an unknown key with a
did-you-mean suggestion when one is close), or loads cleanly (an empty file means the defaults).
"""

from __future__ import annotations

import pytest
from catalogue_helpers import cli_error, one_line_error, scenecap

from scenecap import ScenecapError
from scenecap.train.cli import resolve_train_config
from scenecap.train.config import check_values


def _args(*argv: str):
    from scenecap.cli import build_parser

    return build_parser().parse_args(["train", *argv])


def _config(path, content, *argv: str, train: str | None = "a.json"):
    """Write the config file (str or bytes), resolve it as `scenecap train` does, and check its values."""
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content == "folder":
        path.mkdir()
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    cfg = resolve_train_config(_args(*([train] if train else []), "--config", str(path), *argv))
    check_values(cfg)
    return cfg


F = "FILE"  # the error names the config file
V = "VALUE"  # the error names the key and value (checked after the file was read: 'config: KEY = VALUE')
A = "ARGUMENT"  # the error names the command-line argument

# case -> (file suffix, content (None: no file), extra arguments, what the error names, its words).
# The first eight came from test_train_datasets.py (moved here: the catalogue is the place for bad configs).
CASES: dict[str, tuple] = {
    "unknown key, close to one": (".toml", "epoch = 3\n", [], F, "unknown key 'epoch' (did you mean 'epochs'?)"),
    "unknown nested key": (".toml", "[model]\nunit = 3\n", [], F,
                           "unknown key 'model.unit' (did you mean 'model.units'?)"),
    "text for an integer": (".toml", 'epochs = "ten"\n', [], F, "'epochs' must be an integer, got 'ten'"),
    "bool for a number": (".toml", "[model]\nalpha = true\n", [], F, "'model.alpha' must be a number, got True"),
    "--set text for an integer": (".toml", "", ["--set", "model.units=many"], F,
                                  "'model.units' must be an integer, got many"),
    "--set not a bool": (".toml", "", ["--set", "tensorboard=maybe"], F, "'tensorboard' must be true or false, got"),
    "invalid TOML": (".toml", "epochs = \n", [], F, "invalid TOML"),
    "invalid YAML": (".yaml", "train: a.json\nmodel:\n  units: [1, 2\n", [], F, "invalid YAML at line"),
    # unknown keys
    "unknown key, nothing close": (".toml", "zzz = 1\n", [], F, "unknown key 'zzz'; expected one of ["),
    "misspelt table": (".toml", "[modle]\nunits = 3\n", [], F, "unknown key 'modle' (did you mean 'model'?)"),
    "YAML unknown key": (".yaml", "epochz: 3\n", [], F, "unknown key 'epochz' (did you mean 'epochs'?)"),
    "--set unknown key": (".toml", "", ["--set", "nosuch=1"], F, "unknown key 'nosuch'"),
    # wrong types
    "float for an integer": (".toml", "epochs = 3.5\n", [], F, "'epochs' must be an integer, got 3.5"),
    "bool for an integer": (".toml", "epochs = true\n", [], F, "'epochs' must be an integer, got True"),
    "quoted number": (".toml", 'learning_rate = "0.001"\n', [], F, "'learning_rate' must be a number, got '0.001'"),
    "number for a table": (".toml", "model = 5\n", [], F, "model: expected a table, got 5"),
    "number for a path": (".toml", "val = 5\n", [], F, "'val' must be a string, got 5"),
    "quoted bool": (".toml", '[text]\nlowercase = "no"\n', [], F, "'text.lowercase' must be true or false, got 'no'"),
    "YAML list for a path": (".yaml", "val:\n  - v.json\n", [], F, "'val' must be a string, got ['v.json']"),
    "--set a value for a table": (".toml", "", ["--set", "model=3"], F, "model: expected a table, got '3'"),
    "--set a key under a number": (".toml", "epochs = 3\n", ["--set", "epochs.x=1"], A,
                                   "--set 'epochs.x=1': epochs is not a table"),
    "--set a decimal for an integer": (".toml", "", ["--set", "model.image_size=64.5"], F,
                                       "'model.image_size' must be an integer, got 64.5"),
    # bad enum values
    "mode": (".toml", 'mode = "fast"\n', [], V, "mode = 'fast'; expected one of ('finetune', 'cached')"),
    "strategy": (".yaml", "strategy: tpu\n", [], V, "strategy = 'tpu'; expected one of"),
    "monitor": (".toml", 'monitor = "accuracy"\n', [], V, "monitor = 'accuracy'; expected one of"),
    "cache_images": (".toml", 'cache_images = "disk"\n', [], V, "cache_images = 'disk'; expected one of"),
    "dataset_format": (".toml", 'dataset_format = "xml"\n', [], V, "dataset_format = 'xml'; expected auto or one of"),
    "resize": (".toml", 'resize = "lanczos"\n', [], V, "resize = 'lanczos'; expected one of"),
    "backbone": (".yaml", "model:\n  backbone: resnet50\n", [], V, "model.backbone = 'resnet50'; expected one of"),
    "decoder_state": (".toml", '[model]\ndecoder_state = "zero"\n', [], V, "model.decoder_state = 'zero'; expected"),
    "text normalization": (".toml", '[text]\nnormalization = "NFX"\n', [], V,
                           "text normalization 'NFX' unknown; expected one of"),
    # numbers out of range
    "negative epochs": (".toml", "epochs = -1\n", [], V, "epochs = -1; expected a positive integer"),
    "negative --epochs": (".toml", "", ["--epochs", "-5"], V, "epochs = -5; expected a positive integer"),
    "zero batch size": (".yaml", "batch_size: 0\n", [], V, "batch_size = 0; expected a positive integer"),
    "negative learning rate": (".toml", "learning_rate = -0.1\n", [], V, "learning_rate = -0.1; expected a positive"),
    "NaN learning rate": (".toml", "", ["--set", "learning_rate=nan"], V, "learning_rate = nan; expected a positive"),
    "zero fine-tune learning rate": (".toml", "finetune_learning_rate = 0.0\n", [], V,
                                     "finetune_learning_rate = 0.0; expected a positive number"),
    "infinite clipnorm": (".toml", "", ["--set", "clipnorm=inf"], V, "clipnorm = inf; expected 0 (no clipping) or"),
    "min_count 0": (".toml", "min_count = 0\n", [], V, "min_count = 0; expected 1 or more"),
    "max_vocab under the specials": (".toml", "max_vocab = 3\n", [], V, "max_vocab = 3; expected more than the 4"),
    "negative early stopping": (".toml", "early_stopping = -1\n", [], V, "early_stopping = -1; expected 0 or more"),
    "image too small": (".toml", "[model]\nimage_size = 16\n", [], V,
                        "model.image_size = 16; expected a multiple of 32, 32 or more"),
    "image not a multiple of 32": (".toml", "", ["--image-size", "100"], V,
                                   "model.image_size = 100; expected a multiple of 32"),
    "max_length too short": (".toml", "", ["--max-length", "2"], V, "model.max_length = 2; expected 3 or more"),
    "alpha MobileNetV2 lacks": (".toml", "[model]\nalpha = 0.6\n", [], V, "model.alpha = 0.6; expected 0.35, 0.5"),
    # the file as a whole
    "YAML list": (".yaml", "- train: a.json\n- epochs: 3\n", [], F,
                  "expected a table of settings at the top level, got list"),
    "YAML scalar": (".yml", "just some text\n", [], F, "expected a table of settings at the top level, got str"),
    "YAML two documents": (".yaml", "epochs: 3\n---\nepochs: 4\n", [], F, "invalid YAML at line"),
    "YAML tab indentation": (".yaml", "model:\n\tunits: 3\n", [], F, "invalid YAML at line 2"),
    "YAML nested too deep": (".yaml", "[" * 2_000, [], F, "nested too deeply; expected a table of settings"),
    "TOML nested too deep": (".toml", "a = " + "[" * 100_000, [], F, "nested too deeply"),
    "invalid JSON (a run's config.json)": (".json", '{"epochs": 3,}', [], F, "invalid JSON at line 1"),
    "not UTF-8": (".toml", 'language = "français"\n'.encode("latin-1"), [], F, "not UTF-8 text (byte 16)"),
    "unknown file type": (".ini", "[train]\nepochs = 3\n", [], F, "unknown config file type '.ini'; expected .toml"),
    "missing file": (".toml", None, [], F, "config file not found"),
    "a folder": (".toml", "folder", [], F, "is a folder; expected a .toml or .yaml config file"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_config(tmp_path, case):
    suffix, content, argv, names, expected = CASES[case]
    path = tmp_path / f"train{suffix}"
    named = [str(path)] if names == F else []
    msg = one_line_error(lambda: _config(path, content, *argv), *named, expected)
    if names == V:
        assert msg.startswith(("config: ", "text normalization")), msg
    if names == A:
        assert msg.startswith(f"--set {argv[-1]!r}: "), msg


def test_no_training_annotations_anywhere(tmp_path):
    one_line_error(lambda: _config(tmp_path / "train.toml", "epochs = 3\n", train=None),
                   "no training annotations: give them as the first argument, as 'train' in --config")
    one_line_error(lambda: resolve_train_config(_args("--set", "epochs")), "--set 'epochs': expected KEY=VALUE")
    one_line_error(lambda: resolve_train_config(_args("a.json", "--set", "=3")), "--set '=3': expected KEY=VALUE")


# Clean recoveries: the file means the defaults, or reads through a byte-order mark.
OK_CASES = {
    "empty TOML": (".toml", b""),
    "empty YAML": (".yaml", b""),
    "YAML of comments only": (".yaml", b"# nothing set yet\n"),
    "TOML with a BOM": (".toml", b"\xef\xbb\xbfepochs = 10\n"),
    "YAML with a BOM": (".yaml", b"\xef\xbb\xbfepochs: 10\n"),
}


@pytest.mark.parametrize("case", sorted(OK_CASES))
def test_config_recovers(tmp_path, case):
    suffix, content = OK_CASES[case]
    cfg = _config(tmp_path / f"train{suffix}", content)
    assert (cfg.train, cfg.epochs, cfg.model.units) == ("a.json", 10, 512)


CLI_CASES = {
    "unknown key, close to one": ("epoch = 3\n", [], "unknown key 'epoch' (did you mean 'epochs'?)"),
    "negative --epochs": ("", ["--epochs", "-1"], "config: epochs = -1; expected a positive integer"),
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_train_command(tmp_path, case):
    content, argv, expected = CLI_CASES[case]
    f = tmp_path / "train.toml"
    f.write_text(content, encoding="utf-8")
    r = scenecap("train", str(tmp_path / "captions.json"), "--config", str(f), "--out", str(tmp_path / "run"), *argv)
    cli_error(r, expected)
    assert not (tmp_path / "run").exists()  # refused before anything was written


# Catalogue size: 56 bad configs through resolve_train_config + check_values, 3 missing or malformed command-line
# settings, 5 files that load, and 2 through `scenecap train` = 66 cases.
def test_catalogue_size():
    assert (len(CASES), len(OK_CASES), len(CLI_CASES)) == (56, 5, 2)


def test_backbone_weights_of_another_model_are_one_line_naming_the_file(tmp_path):
    from scenecap.train.model import ModelConfig, make_backbone

    small = ModelConfig(vocab_size=0, image_size=64, alpha=0.35, feature_stride=8)
    h5 = tmp_path / "backbone.weights.h5"
    make_backbone(small).save_weights(str(h5))
    # The same cut backbone takes them back (how a trained scenecap backbone is reused)...
    assert make_backbone(ModelConfig(**{**small.to_dict(), "weights": str(h5)})).count_params() > 0
    # ...a wider one cannot, and says which file and which model in one line.
    wide = ModelConfig(vocab_size=0, image_size=64, alpha=1.0, feature_stride=8, weights=str(h5))
    with pytest.raises(ScenecapError) as e:
        make_backbone(wide)
    msg = str(e.value)
    assert "\n" not in msg and str(h5) in msg and "do not fit mobilenet_v2 alpha=1.0" in msg
