"""Users' datasets as they come: COCO, Karpathy splits, Flickr token files, captions.txt, CSV/JSONL; checked
before training, with one-line errors naming the file, line or key that is wrong. And the config file."""

from __future__ import annotations

import json

import numpy as np
from catalogue_helpers import write_image

from scenecap.train.datasets import detect_format, load_dataset
from scenecap.train.text import TextOptions
from scenecap.train.validate import validate


def _loaded(folder, name: str, text: str, fmt: str) -> list:
    """The samples of annotation file `name` holding `text`, which must be detected as `fmt`."""
    f = folder / name
    f.write_text(text, encoding="utf-8")
    assert detect_format(f) == fmt
    return load_dataset(f)


def test_karpathy_split_folds_restval_into_train(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        write_image(tmp_path / "val2014" / name)
    data = {"dataset": "coco", "images": [
        {"filepath": "val2014", "filename": "a.jpg", "split": "train", "cocoid": 1,
         "sentences": [{"raw": "A cat.", "tokens": ["a", "cat"]}]},
        {"filepath": "val2014", "filename": "b.jpg", "split": "restval", "cocoid": 2,
         "sentences": [{"raw": "A dog."}, {"raw": "Two dogs."}]},
        {"filepath": "val2014", "filename": "c.jpg", "split": "val", "cocoid": 3, "sentences": [{"raw": "A bus."}]},
        {"filepath": "val2014", "filename": "d.jpg", "split": "test", "cocoid": 4, "sentences": [{"raw": "A car."}]},
    ]}
    f = tmp_path / "dataset_coco.json"
    f.write_text(json.dumps(data))
    assert detect_format(f) == "karpathy"
    train = load_dataset(f, tmp_path, "train")
    assert [s.image_id for s in train] == [1, 2]
    assert train[1].captions == ["A dog.", "Two dogs."] and train[1].image == tmp_path / "val2014" / "b.jpg"
    assert [s.image_id for s in load_dataset(f, tmp_path, "val")] == [3]
    assert [s.image_id for s in load_dataset(f, tmp_path, "test")] == [4]


def test_flickr_token_file_groups_five_captions_per_image(flickr_dir):
    f = flickr_dir / "Flickr8k.token.txt"
    f.write_text("1000_a.jpg#0\tA child in a pink dress .\n1000_a.jpg#1\tA girl going into a building .\n"
                 "1001_b.jpg#0\tA black dog and a spotted dog are fighting\n\n")
    assert detect_format(f) == "flickr"
    samples = load_dataset(f)
    assert [s.image.name for s in samples] == ["1000_a.jpg", "1001_b.jpg"]
    assert samples[0].captions == ["A child in a pink dress .", "A girl going into a building ."]
    assert samples[0].image.parent.name == "Images"  # the usual image folder beside the file is found
    split = flickr_dir / "Flickr_8k.trainImages.txt"
    split.write_text("1001_b.jpg\n")
    assert [s.image.name for s in load_dataset(f, image_list=split)] == ["1001_b.jpg"]


def test_flickr_captions_txt_keeps_unquoted_commas_in_captions(flickr_dir):
    samples = _loaded(flickr_dir, "captions.txt", "image,caption\n1000_a.jpg,A child , in a pink dress , climbing "
                      'stairs .\n1000_a.jpg,"A girl, quoted"\n1002_c.jpg,A man on a bike\n', "csv")
    assert samples[0].captions == ["A child , in a pink dress , climbing stairs .", "A girl, quoted"]
    assert samples[1].image.name == "1002_c.jpg"


def test_generic_csv_tsv_and_pipe_files_with_other_column_names(flickr_dir):
    tsv = flickr_dir / "mine.tsv"
    tsv.write_text("file_name\ttext\n1000_a.jpg\tقطة على الكرسي\n", encoding="utf-8")
    assert load_dataset(tsv)[0].captions == ["قطة على الكرسي"]
    pipe = flickr_dir / "results.csv"  # Flickr30k's own file
    pipe.write_text("image_name| comment_number| comment\n1001_b.jpg| 0| Two young guys .\n")
    assert load_dataset(pipe)[0].captions == ["Two young guys ."]


def test_jsonl_and_json_list_records(flickr_dir):
    records = ('{"image": "1000_a.jpg", "caption": "un chat"}\n{"image": "1000_a.jpg", "captions": ["le chat"]}\n'
               '{"image": "1001_b.jpg", "caption": "un chien"}\n')
    samples = _loaded(flickr_dir, "caps.jsonl", records, "jsonl")
    assert samples[0].captions == ["un chat", "le chat"] and len(samples) == 2
    listed = _loaded(flickr_dir, "caps.json", json.dumps([{"filename": "1002_c.jpg", "caption": "x"}]), "jsonl")
    assert listed[0].image.name == "1002_c.jpg"


def test_cmyk_greyscale_and_alpha_images_are_converted_not_dropped(tmp_path):
    from scenecap.edge.preprocess import PreprocessSpec
    from scenecap.train.pipeline import image_dataset

    paths = [write_image(tmp_path / "cmyk.jpg", "CMYK"), write_image(tmp_path / "grey.png", "L"),
             write_image(tmp_path / "alpha.png", "RGBA"), write_image(tmp_path / "grey16.png", "I;16")]
    f = tmp_path / "caps.jsonl"
    f.write_text("".join(json.dumps({"image": p.name, "caption": "a thing"}) + "\n" for p in paths))
    kept, report = validate(load_dataset(f), str(f), TextOptions(), progress=False)
    assert len(kept) == 4 and set(report.modes) == {"CMYK", "L", "RGBA", "I;16"}
    images = list(image_dataset([str(s.image) for s in kept], PreprocessSpec(32, 32)).as_numpy_iterator())
    assert all(im.shape == (32, 32, 3) and im.dtype == np.uint8 for im in images)


# Malformed annotation files, validation of missing/unreadable images and config mistakes:
# tests/test_catalogue_datasets.py and tests/test_catalogue_configs.py.


# --- the config file ----------------------------------------------------------------------------------------

def _args(*argv):
    from scenecap.cli import build_parser

    return build_parser().parse_args(["train", *argv])


def test_toml_and_yaml_configs_with_command_line_overrides(tmp_path):
    from scenecap.train.cli import resolve_train_config

    (tmp_path / "t.toml").write_text('train = "a.json"\nepochs = 30\nmode = "cached"\n[model]\nunits = 128\n'
                                     'backbone = "mobilenet_v3_small"\nalpha = 1.0\n[text]\nlowercase = false\n')
    cfg = resolve_train_config(_args("--config", str(tmp_path / "t.toml"), "--epochs", "5",
                                     "--set", "model.embed_dim=64", "--set", "early_stopping=3"))
    assert (cfg.train, cfg.epochs, cfg.mode, cfg.early_stopping) == ("a.json", 5, "cached", 3)
    assert (cfg.model.units, cfg.model.embed_dim, cfg.model.backbone) == (128, 64, "mobilenet_v3_small")
    assert cfg.text.lowercase is False and cfg.batch_size == 32  # untouched defaults stay
    (tmp_path / "t.yaml").write_text("train: b.json\nval: c.json\nmixed_precision: true\nmodel:\n  weights: null\n")
    cfg = resolve_train_config(_args("x.json", "--config", str(tmp_path / "t.yaml")))
    assert (cfg.train, cfg.val, cfg.mixed_precision, cfg.model.weights) == ("x.json", "c.json", True, None)
