"""Pretrained folders and the Hugging Face Hub: save_pretrained, from_pretrained, hf:// checkpoints.

Offline throughout: folders made here, a Hugging Face cache filled by hand (HF_HUB_OFFLINE=1), or a
Hub played by a server on 127.0.0.1; huggingface_hub reads its settings when imported, so those
tests run ``bicorseg`` in a subprocess.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from bicorseg import BiCoRSeg
from bicorseg.checkpoint import load_checkpoint, save_checkpoint
from bicorseg.data.folder import ClassTable
from bicorseg.errors import CheckpointError, ConfigError, OutputError
from bicorseg.models.hub import Tiling, push_to_hub, read_pretrained
from bicorseg.spec import DatasetSpec, LabelEncoding
from tests.helpers import require
from tests.helpers.hub import HubServer, fill_hf_cache
from tests.helpers.inference import random_image, run, spec, write_geotiff
from tests.helpers.models import tiny_config
from tests.helpers.processes import cli_subprocess

safetensors_torch = require("safetensors.torch")
require("huggingface_hub")

REPO = Path(__file__).resolve().parents[1]
FILES = ["README.md", "classes.yaml", "config.json", "model.safetensors"]


@pytest.fixture(scope="module")
def model() -> BiCoRSeg:
    torch.manual_seed(0)
    return BiCoRSeg(tiny_config(), dataset=spec()).eval()


@pytest.fixture
def folder(model, tmp_path) -> Path:
    return model.save_pretrained(tmp_path / "model", tiling=Tiling(256, 0.5, "checkpoint"))


def test_a_saved_folder_reads_back_as_the_same_model(model, folder) -> None:
    assert sorted(p.name for p in folder.iterdir()) == FILES
    restored = BiCoRSeg.from_pretrained(folder)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), restored(x))
    assert restored.config == model.config and restored.dataset == model.dataset and not restored.training
    loaded = load_checkpoint(folder)  # the reader of every --checkpoint
    assert loaded.tiling == Tiling(256, 0.5, "checkpoint")
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "bicorseg" and config["card"] == {"licence": None, "evaluation": None}
    table = ClassTable.from_yaml(folder / "classes.yaml")
    assert (
        table.spec(model.dataset.bands, model.dataset.mean, model.dataset.std).class_names
        == spec().class_names
    )


def test_numpy_statistics_are_saved_as_plain_data(model, tmp_path) -> None:
    mean = tuple(np.asarray(model.dataset.mean, dtype=np.float64))  # numpy's floats, as computed from pixels
    numpy_model = BiCoRSeg(model.config, dataset=replace(model.dataset, mean=mean))
    numpy_model.load_state_dict(model.state_dict())
    restored = BiCoRSeg.from_pretrained(numpy_model.save_pretrained(tmp_path / "numpy"))
    assert restored.dataset == model.dataset


def test_the_card_tells_classes_bands_recipe_scores_licence_and_loading(model, tmp_path) -> None:
    train = {"data": {"dataset": "folder", "crop_size": 256}, "optimizer": {"lr": 0.0006}}
    report = {"convention": {"dataset": "test", "split": "val", "tta": "none"}, "miou": 0.4321,
              "mean_f1": 0.5, "oa": 0.9, "pixels": 1000,
              "per_class": {"road": {"iou": 0.25, "f1": 0.4, "in_means": True}}}  # fmt: skip
    (tmp_path / "metrics.json").write_text(json.dumps(report))
    folder = model.save_pretrained(tmp_path / "m", card={"train_config": train}, licence="cc-by-4.0", evaluation=tmp_path / "metrics.json", repo_id="org/roads")  # fmt: skip
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlicense: cc-by-4.0\nlibrary_name: bicorseg\n")
    assert "| 1 | building | `#FF0000` | yes |" in card
    assert "| b2 | 126 | 52 |" in card  # band, mean, std
    assert "Dataset `folder`, trained with `bicorseg train`" in card and "lr: 0.0006" in card
    assert "mIoU 43.21 %, mean F1 50.00 %, OA 90.00 % (1000 pixels)." in card and "- split: val" in card
    assert "| road | 25.00 | 40.00 | yes |" in card
    assert 'BiCoRSeg.from_pretrained("org/roads")' in card and "--checkpoint hf://org/roads" in card
    read = load_checkpoint(folder)
    again = read.build_model().save_pretrained(tmp_path / "again", card=read.extra)  # the card travels on
    assert load_checkpoint(again).extra["train_config"] == train
    assert (
        "license: cc-by-4.0" in (again / "README.md").read_text()
        and "mIoU 43.21 %" in (again / "README.md").read_text()
    )
    with pytest.raises(ConfigError, match="not an evaluation report"):
        model.save_pretrained(tmp_path / "x", evaluation={"miou": 1})


def test_colour_encoded_classes_keep_their_colours_in_the_class_table(tmp_path) -> None:
    colours = ((10, 20, 30), (40, 50, 60), (70, 80, 90), (1, 2, 3))
    encoded = DatasetSpec("dubai", spec().class_names, colours, 4, (0, 1, 2),
                          label_encoding=LabelEncoding("colours", colours, ((0, 0, 0),)))  # fmt: skip
    folder = BiCoRSeg(tiny_config(), dataset=encoded).save_pretrained(tmp_path / "m")
    assert load_checkpoint(folder).dataset == encoded
    assert "ignore_colours: ['#000000']" in (folder / "classes.yaml").read_text()


def test_the_folder_is_written_whole_and_never_over_other_files(model, folder, tmp_path) -> None:
    with pytest.raises(OutputError, match="is not empty: choose a new folder"):
        model.save_pretrained(folder)
    assert model.save_pretrained(folder, overwrite=True) == folder
    (folder / "notes.txt").write_text("mine")
    with pytest.raises(OutputError, match=r"holds other files \(notes\.txt\)"):
        model.save_pretrained(folder, overwrite=True)
    bare = BiCoRSeg(tiny_config()).save_pretrained(tmp_path / "bare")
    assert sorted(p.name for p in bare.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert load_checkpoint(bare).dataset is None


def _header_of(path: Path) -> dict:
    data = path.read_bytes()
    return json.loads(data[8 : 8 + struct.unpack("<Q", data[:8])[0]])


def _edit(folder: Path, case: str) -> None:
    config = json.loads((folder / "config.json").read_text())
    weights = safetensors_torch.load(
        (folder / "model.safetensors").read_bytes()
    )  # not mapped: rewritten below
    if case == "config too large":
        (folder / "config.json").write_text(json.dumps(config) + " " * (1 << 20))
    elif case == "NaN in config":
        (folder / "config.json").write_text(json.dumps(config).replace('"tau": 1.0', '"tau": NaN'))
    elif case == "not bicorseg's":
        (folder / "config.json").write_text(json.dumps({**config, "format": "other"}))
    elif case == "huge width":
        config["model_config"]["width"] = 1 << 20
        (folder / "config.json").write_text(json.dumps(config))
    elif case == "fractional width":
        config["model_config"]["width"] = 32.0
        (folder / "config.json").write_text(json.dumps(config))
    elif case == "many layers":
        config["model_config"]["layers"] = 100_000
        (folder / "config.json").write_text(json.dumps(config))
    elif case == "no weights":
        (folder / "model.safetensors").unlink()
    elif case == "absurd header":
        (folder / "model.safetensors").write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    elif case == "pickle":
        torch.save(weights, folder / "model.safetensors")
    elif case == "NaN weight":
        weights["class_embed"][0, 0] = float("nan")
        safetensors_torch.save_file(weights, folder / "model.safetensors")
    elif case == "extra weight":
        safetensors_torch.save_file({**weights, "extra": torch.zeros(1)}, folder / "model.safetensors")
    elif case == "float64 weight":
        weights["neck.fuse.weight"] = weights["neck.fuse.weight"].double()
        safetensors_torch.save_file(weights, folder / "model.safetensors")
    elif case == "class table disagrees":
        text = (folder / "classes.yaml").read_text()
        (folder / "classes.yaml").write_text(text.replace("#FF0000", "#FF0001"))


HOSTILE = [
    ("config too large", r"config\.json: unreadable model configuration \(more than 1024 KiB\)"),
    ("NaN in config", r"config\.json: unreadable model configuration \(invalid JSON: NaN is not a number"),
    ("not bicorseg's", r"config\.json: not a bicorseg model configuration \(format 'other'\)"),
    ("huge width", r"model\.safetensors: class_embed is \[4, 32\], not the \[4, 1048576\] of config\.json"),
    ("many layers", r"model\.safetensors: 2 HBIS layers, config\.json says 100000"),
    ("fractional width", r"config\.json has invalid metadata: model\.width: expected an integer, got 32\.0"),
    ("no weights", r"model\.safetensors: the weights file is missing"),
    ("absurd header", r"model\.safetensors: not a safetensors file \(header of 1099511627776 bytes\)"),
    ("pickle", r"model\.safetensors: not a safetensors file"),
    ("NaN weight", r"model\.safetensors: weight class_embed has 1 NaN"),
    ("extra weight", r"model\.safetensors does not fit config\.json: it has extra, which the network does not"),
    ("float64 weight", r"neck\.fuse\.weight is F64 \[32, 128, 1, 1\], config\.json needs F32 \[32, 128, 1, 1\]"),
    ("class table disagrees", r"classes\.yaml disagrees with config\.json: palette"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "message"), HOSTILE, ids=[c for c, _ in HOSTILE])
def test_a_hostile_folder_is_one_error_naming_the_file(folder, case, message) -> None:
    _edit(folder, case)
    with pytest.raises(CheckpointError, match=message):
        read_pretrained(folder, BiCoRSeg)


def test_hostile_folder_on_the_command_line_is_one_line(folder, tmp_path, capsys) -> None:
    _edit(folder, "NaN weight")
    image = write_geotiff(tmp_path / "scene.tif", random_image(3, 64, 64))
    code, _, err = run(capsys, "predict", image, "--checkpoint", folder, "--output", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "weight class_embed has 1 NaN" in err
    assert not (tmp_path / "out" / "scene.tif").exists()


def test_push_to_hub_checks_its_arguments_before_any_request(model, tmp_path, capsys) -> None:
    with pytest.raises(ConfigError, match="repo_id: not a Hub repository id"):
        push_to_hub(model, "no slash here")
    with pytest.raises(ConfigError, match="give ORG/NAME"):
        model.push_to_hub("name-only")
    with pytest.raises(CheckpointError, match="not a pretrained folder"):
        push_to_hub(tmp_path / "missing", "org/name", network=BiCoRSeg)
    checkpoint = save_checkpoint(model, tmp_path / "model.ckpt")
    code, _, err = run(capsys, "export", "pretrained", "--checkpoint", checkpoint, "--output", tmp_path / "o", "--push-to-hub", "a b/c")  # fmt: skip
    assert code == 2 and "--push-to-hub: not a Hub repository id" in err and not (tmp_path / "o").exists()
    code, _, err = run(capsys, "export", "onnx", "--checkpoint", checkpoint, "--output", tmp_path / "m.onnx", "--licence", "mit")  # fmt: skip
    assert code == 2 and "--licence is an option of export pretrained, not of export onnx" in err
    code, _, err = run(capsys, "export", "pretrained", "--checkpoint", checkpoint, "--output", tmp_path / "o", "--private")  # fmt: skip
    assert code == 2 and "--private is for --push-to-hub" in err


@pytest.mark.slow
def test_export_pretrained_then_predict_from_the_folder(model, tmp_path, capsys) -> None:
    """``export pretrained`` writes the folder from a checkpoint; ``predict --checkpoint FOLDER`` gives the
    class map the checkpoint gives."""
    checkpoint = save_checkpoint(model, tmp_path / "model.ckpt")
    code, out, _ = run(capsys, "export", "pretrained", "--checkpoint", checkpoint, "--output", tmp_path / "shared", "--licence", "mit")  # fmt: skip
    assert code == 0 and "wrote" in out and "license: mit" in (tmp_path / "shared" / "README.md").read_text()
    image = write_geotiff(tmp_path / "scene.tif", random_image(3, 96, 80))
    maps = []
    for source, out_dir in ((checkpoint, tmp_path / "a"), (tmp_path / "shared", tmp_path / "b")):
        assert run(capsys, "predict", image, "--checkpoint", source, "--output", out_dir)[0] == 0
        import rasterio

        with rasterio.open(out_dir / "scene.tif") as raster:
            maps.append(raster.read(1))
    assert np.array_equal(maps[0], maps[1])


@pytest.mark.slow
def test_hf_checkpoints_from_a_hand_filled_cache_offline(folder, tmp_path) -> None:
    """``hf://org/name`` in huggingface_hub's offline mode: read from the Hugging Face cache, by
    ``predict`` and by ``BiCoRSeg.from_pretrained``; a repository not in the cache is one line."""
    hf_home = tmp_path / "hf"
    fill_hf_cache(hf_home / "hub", "someone/tiny-roads", {p.name: p.read_bytes() for p in folder.iterdir()})
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    image = write_geotiff(tmp_path / "scene.tif", random_image(3, 64, 64))
    run = cli_subprocess("predict", str(image), "--checkpoint", "hf://someone/tiny-roads", "--output", str(tmp_path / "out"), env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "scene.tif").is_file()
    code = "from bicorseg import BiCoRSeg; m = BiCoRSeg.from_pretrained('someone/tiny-roads'); print(m.dataset.class_names)"
    python = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(REPO / "src"), **env})  # fmt: skip
    assert python.returncode == 0 and "('road', 'building', 'tree', 'water')" in python.stdout, python.stderr
    run = cli_subprocess("predict", str(image), "--checkpoint", "hf://someone/other", "--output", str(tmp_path / "o2"), env=env)  # fmt: skip
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert (
        "hf://someone/other is not in the Hugging Face cache" in lines[0]
        and "HF_HUB_OFFLINE is set" in lines[0]
    )


@pytest.mark.slow
def test_hf_checkpoints_downloaded_with_sizes_checked_first(folder, tmp_path) -> None:
    """Online (a Hub on 127.0.0.1): the folder's files are downloaded into the Hugging Face cache;
    weights that the Hub says are larger than the configured network can be are refused before any
    byte of them is downloaded."""
    files = {("someone/tiny-roads", p.name): p.read_bytes() for p in folder.iterdir()}
    image = write_geotiff(tmp_path / "scene.tif", random_image(3, 64, 64))
    with HubServer(files) as hub:
        env = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": hub.url()}
        run = cli_subprocess("predict", str(image), "--checkpoint", "hf://someone/tiny-roads", "--output", str(tmp_path / "out"), env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr
    cached = tmp_path / "hf" / "hub" / "models--someone--tiny-roads" / "snapshots"
    assert sorted(p.name for p in next(cached.iterdir()).iterdir()) == ["classes.yaml", "config.json", "model.safetensors"]  # fmt: skip
    with HubServer(files, sizes={("someone/tiny-roads", "model.safetensors"): 1 << 40}) as hub:
        env = {"HF_HOME": str(tmp_path / "hf2"), "HF_ENDPOINT": hub.url()}
        run = cli_subprocess("predict", str(image), "--checkpoint", "hf://someone/tiny-roads", "--output", str(tmp_path / "o2"), env=env)  # fmt: skip
        asked = list(hub.requests)
    assert run.returncode == 2 and "model.safetensors is 1099511627776 bytes, more than the" in run.stderr, (
        run.stderr
    )
    assert "GET /someone/tiny-roads/resolve/main/model.safetensors" not in asked


@pytest.mark.slow
def test_push_to_hub_uploads_the_folder_that_hf_checkpoints_read_back(model, tmp_path) -> None:
    """``export pretrained --push-to-hub`` against a Hub on 127.0.0.1: the repository is created
    private, the four files are committed as written, and ``predict --checkpoint hf://`` reads them."""
    checkpoint = save_checkpoint(model, tmp_path / "model.ckpt")
    image = write_geotiff(tmp_path / "scene.tif", random_image(3, 64, 64))
    with HubServer({}) as hub:
        env = {"HF_HOME": str(tmp_path / "hf"), "HF_ENDPOINT": hub.url(), "HF_TOKEN": "hf_local_test"}
        run = cli_subprocess("export", "pretrained", "--checkpoint", str(checkpoint), "--output", str(tmp_path / "shared"), "--licence", "mit", "--push-to-hub", "someone/roads", "--private", env=env)  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert f"uploaded to {hub.url()}/someone/roads/commit/" in run.stdout
        # huggingface_hub sends "private": true, or from 1.x "visibility": "private"
        created = [(c["organization"], c["name"], c.get("visibility", "private" if c.get("private") else None)) for c in hub.created]  # fmt: skip
        assert created == [("someone", "roads", "private")]
        shared = {name: (tmp_path / "shared" / name).read_bytes() for name in FILES}
        assert {name: data for (repo, name), data in hub.files.items() if repo == "someone/roads"} == shared
        run = cli_subprocess("predict", str(image), "--checkpoint", "hf://someone/roads", "--output", str(tmp_path / "out"), env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "out" / "scene.tif").is_file()


def test_a_python_hub_id_that_is_no_folder_and_no_id_is_refused(tmp_path) -> None:
    with pytest.raises(CheckpointError, match=r"is a folder without config\.json: give a checkpoint file"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="not a pretrained folder"):
        BiCoRSeg.from_pretrained(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="not a pretrained folder"):
        BiCoRSeg.from_pretrained("not an id")
