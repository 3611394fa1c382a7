"""ImageNet weights of the backbones: the short timm names, the caches, download, import and list.

No test reaches the internet: weights are made here (random, in the published layouts), downloads
come from servers on 127.0.0.1, and the Hugging Face settings (read when huggingface_hub is
imported) are given to ``bicorseg`` subprocesses.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest
import torch

from bicorseg import pretrained
from bicorseg.cli.main import main
from bicorseg.errors import CheckpointError, ConfigError, OutputError
from bicorseg.models import BiCoRSeg, ModelConfig, adapt_first_conv_weight
from tests.helpers import require
from tests.helpers.hub import HubServer, fill_hf_cache
from tests.helpers.processes import cli_subprocess
from tests.helpers.range_server import RangeServer

timm = require("timm")
safetensors_torch = require("safetensors.torch")

ATTO_REPO = "timm/convnext_atto.d2_in1k"


def timm_weights(model: str = "convnext_atto") -> dict[str, torch.Tensor]:
    """Random weights of a timm model, in the layout timm publishes (classifier head included)."""
    return {k: v.contiguous() for k, v in timm.create_model(model, pretrained=False).state_dict().items()}


def safetensors_bytes(state: dict[str, torch.Tensor]) -> bytes:
    return safetensors_torch.save(state)


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty torch cache ($TORCH_HOME is read at each call)."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def test_short_timm_names_are_timm_models_with_hub_weights() -> None:
    source = pretrained.weights_source("convnext_atto")
    assert (source.library, source.model, source.repo_id) == ("timm", "convnext_atto.d2_in1k", ATTO_REPO)
    assert source.filename == "model.safetensors" and source.sha256_prefix is None
    assert pretrained.weights_source("timm:convnext_nano").repo_id == "timm/convnext_nano.in12k_ft_in1k"
    tiny = pretrained.weights_source("convnext_tiny")
    assert tiny.filename == "convnext_tiny-983f1562.pth" and tiny.sha256_prefix == "983f1562"
    with pytest.raises(ConfigError, match="bicorseg's small ConvNeXt\\) has no pretrained weights"):
        pretrained.weights_source("convnext_nano")


@pytest.mark.slow
def test_imported_weights_make_pretrained_imagenet_work_offline(tmp_path, torch_home) -> None:
    """A file carried over by hand: imported into torch hub's cache, then read by ``pretrained: imagenet``
    (4 bands: the stem adapted by bicorseg's rule, every other weight the file's)."""
    state = timm_weights()
    file = tmp_path / "model.safetensors"
    file.write_bytes(safetensors_bytes(state))
    result = pretrained.import_weights(file, "convnext_atto")
    assert result.path == torch_home / "hub" / "checkpoints" / "convnext_atto.d2_in1k.safetensors"
    assert result.sha256 == hashlib.sha256(file.read_bytes()).hexdigest()
    assert f"compare {result.sha256} with the one on https://huggingface.co/{ATTO_REPO}" in result.checked
    model = BiCoRSeg(
        ModelConfig(num_classes=3, in_channels=4, backbone="convnext_atto", pretrained="imagenet", width=32)
    )
    body = model.backbone.body.state_dict()
    torch.testing.assert_close(body["stem_0.weight"], adapt_first_conv_weight(state["stem.0.weight"], 4))
    for key in ("stages_3.blocks.1.mlp.fc2.weight", "stages_1.downsample.1.weight", "stem_1.bias"):
        native = key.replace("stages_", "stages.").replace("stem_", "stem.")
        assert torch.equal(body[key], state[native]), key
    assert "state_dict" not in model.backbone.body.pretrained_cfg  # no second copy kept by timm


@pytest.mark.slow
@pytest.mark.parametrize(
    ("backbone", "bands"), [("convnext_femto", 1), ("convnext_pico", 5), ("timm:convnext_nano", 2)]
)
def test_every_small_timm_convnext_reads_imported_weights_for_any_band_count(
    tmp_path, torch_home, backbone, bands
) -> None:
    """femto, pico and timm's nano by name: weights imported offline, the stem adapted to the bands."""
    state = timm_weights(backbone.removeprefix("timm:"))
    file = tmp_path / "model.safetensors"
    file.write_bytes(safetensors_bytes(state))
    pretrained.import_weights(file, backbone)
    config = ModelConfig(num_classes=3, in_channels=bands, backbone=backbone, pretrained="imagenet", width=32)
    body = BiCoRSeg(config).backbone.body.state_dict()
    torch.testing.assert_close(body["stem_0.weight"], adapt_first_conv_weight(state["stem.0.weight"], bands))
    assert torch.equal(body["stages_3.blocks.0.mlp.fc1.weight"], state["stages.3.blocks.0.mlp.fc1.weight"])


@pytest.mark.slow
def test_import_checks_the_file_before_writing_anything(tmp_path, torch_home) -> None:
    cache = torch_home / "hub" / "checkpoints"
    state = timm_weights()

    def file(name: str, data: bytes) -> Path:
        (tmp_path / name).write_bytes(data)
        return tmp_path / name

    not_tv = file("tiny.pth", b"anything")  # torchvision's file name carries the start of its sha256
    with pytest.raises(CheckpointError, match=r"does not match the sha256 prefix of the published convnext_tiny-983f1562\.pth"):  # fmt: skip
        pretrained.import_weights(not_tv, "convnext_tiny")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with pytest.raises(CheckpointError, match=r"is not a safetensors file: convnext_atto's weights are imported as the model\.safetensors of timm/convnext_atto\.d2_in1k"):  # fmt: skip
        pretrained.import_weights(file("atto.pth", buffer.getvalue()), "convnext_atto")
    femto = file("femto.safetensors", safetensors_bytes(timm_weights("convnext_femto")))
    with pytest.raises(CheckpointError, match=r"is not convnext_atto's weights \(convnext_atto\.d2_in1k\): stages\.0\.blocks\.0\.conv_dw\.bias is \(48,\), the network's is \(40,\)"):  # fmt: skip
        pretrained.import_weights(femto, "convnext_atto")
    nan = dict(state, **{"stages.0.blocks.0.gamma": torch.full_like(state["stages.0.blocks.0.gamma"], float("nan"))})  # fmt: skip
    with pytest.raises(CheckpointError, match=r"weight stages\.0\.blocks\.0\.gamma has 40 NaN"):
        pretrained.import_weights(file("nan.safetensors", safetensors_bytes(nan)), "convnext_atto")
    partial = {k: v for k, v in state.items() if k != "stages.2.blocks.3.norm.weight"}
    with pytest.raises(
        CheckpointError, match=r"the network has no weight stages\.2\.blocks\.3\.norm\.weight"
    ):
        pretrained.import_weights(file("partial.safetensors", safetensors_bytes(partial)), "convnext_atto")
    extra = dict(state, **{"decoder.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=r"has a weight decoder\.weight that it does not know"):
        pretrained.import_weights(file("extra.safetensors", safetensors_bytes(extra)), "convnext_atto")
    good = file("model.safetensors", safetensors_bytes(state))
    with pytest.raises(ConfigError, match="sha256: expected 64 hexadecimal digits"):
        pretrained.import_weights(good, "convnext_atto", sha256="abc")
    with pytest.raises(CheckpointError, match="does not match the sha256 given"):
        pretrained.import_weights(good, "convnext_atto", sha256="0" * 64)
    assert not cache.exists()  # nothing written by a refused import
    headless = {k: v for k, v in state.items() if not k.startswith("head.")}  # the head may be left out
    digest = hashlib.sha256(safetensors_bytes(headless)).hexdigest()
    result = pretrained.import_weights(file("headless.safetensors", safetensors_bytes(headless)), "convnext_atto", sha256=digest.upper())  # fmt: skip
    assert result.checked == "sha256 as given" and [p.name for p in cache.iterdir()] == [result.path.name]
    with pytest.raises(OutputError, match="holds other weights of convnext_atto"):
        pretrained.import_weights(good, "convnext_atto")
    assert pretrained.import_weights(good, "convnext_atto", overwrite=True).replaced
    assert result.path.read_bytes() == good.read_bytes()


def test_weights_command_lists_imports_and_names_its_options(tmp_path, torch_home, capsys) -> None:
    file = tmp_path / "model.safetensors"
    file.write_bytes(safetensors_bytes(timm_weights()))
    assert main(["weights", "import", str(file), "--name", "convnext_atto"]) == 0
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    installed = torch_home / "hub" / "checkpoints" / "convnext_atto.d2_in1k.safetensors"
    assert f"convnext_atto: installed {installed} (sha256 {digest}" in capsys.readouterr().out
    assert main(["weights", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert f"torch hub cache: {torch_home / 'hub' / 'checkpoints'}" in lines
    atto = next(line for line in lines if line.startswith("convnext_atto "))
    assert f"{installed} (14.8 MB, sha256 {digest})" in atto
    tiny = next(line for line in lines if line.startswith("convnext_tiny "))
    assert "not cached: convnext_tiny-983f1562.pth from https://download.pytorch.org/models/" in tiny
    resnet = next(line for line in lines if line.startswith("resnet18 "))
    assert "not cached: resnet18-f37072fd.pth from https://download.pytorch.org/models/" in resnet
    assert main(["weights", "import", str(file), "--name", "convnext_pico"]) == 2
    assert main(["weights", "list", "--name", "x"]) == 2
    assert main(["weights", "import", str(file)]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 3 and "is not convnext_pico's weights" in errors[0]
    assert "--name, --sha256 and --overwrite are options of import, not of list" in errors[1]
    assert "weights import FILE --name NAME" in errors[2]


@pytest.mark.slow
def test_without_the_weights_offline_one_line_says_what_to_run(tmp_path) -> None:
    """huggingface_hub's offline mode, an empty cache: training stops at once with the command to run."""
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "TORCH_HOME": str(tmp_path / "torch")}
    run = cli_subprocess(
        "train", "--config", "tiny-test", "--model.backbone", "convnext_atto", "--model.pretrained",
        "imagenet", "--output", str(tmp_path / "run"), env=env,
    )  # fmt: skip
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert "the weights of backbone convnext_atto are not cached and cannot be downloaded" in lines[0]
    assert f"from https://huggingface.co/{ATTO_REPO}/resolve/main/model.safetensors (HF_HUB_OFFLINE is set)" in lines[0]  # fmt: skip
    assert "run 'bicorseg weights download convnext_atto', carry the file it names (model.safetensors)" in lines[0]  # fmt: skip
    assert "'bicorseg weights import FILE --name convnext_atto'" in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_download_from_the_hub_into_its_cache_then_offline(tmp_path) -> None:
    """``weights download`` through huggingface_hub (a Hub on 127.0.0.1): the file lands in the Hugging
    Face cache, checked against its published sha256; then ``pretrained: imagenet`` finds it offline.
    A file whose content does not match its published sha256 is refused and removed."""
    data = safetensors_bytes(timm_weights())
    hf_home = tmp_path / "hf"
    env = {"HF_HOME": str(hf_home), "TORCH_HOME": str(tmp_path / "torch")}
    with HubServer({(ATTO_REPO, "model.safetensors"): data}) as hub:
        run = cli_subprocess("weights", "download", "convnext_atto", env={**env, "HF_ENDPOINT": hub.url()})
    assert run.returncode == 0, run.stderr
    cached = Path(run.stdout.split(": ", 1)[1].strip())
    assert cached.is_relative_to(hf_home / "hub" / "models--timm--convnext_atto.d2_in1k" / "snapshots")
    assert cached.read_bytes() == data and cached.resolve().name == hashlib.sha256(data).hexdigest()
    run = cli_subprocess(
        "train", "--config", "tiny-test", "--model.backbone", "convnext_atto", "--model.pretrained", "imagenet",
        "--trainer.max_epochs", "0", "--output", str(tmp_path / "run"), env={**env, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert "weights" not in run.stderr and "Traceback" not in run.stderr, run.stderr

    other = tmp_path / "hf-tampered"
    with HubServer({(ATTO_REPO, "model.safetensors"): data}, etags={(ATTO_REPO, "model.safetensors"): "ab" * 32}) as hub:  # fmt: skip
        run = cli_subprocess("weights", "download", "convnext_atto", env={"HF_HOME": str(other), "HF_ENDPOINT": hub.url()})  # fmt: skip
    assert run.returncode == 2 and "is not the abab" in run.stderr, run.stderr
    assert [p for p in (other / "hub").rglob("*") if p.is_file() and "blobs" in p.parts] == []


@pytest.mark.slow
def test_a_hand_filled_hf_cache_is_read_offline(tmp_path) -> None:
    """Weights that timm (or a copied ~/.cache/huggingface) left in the Hugging Face cache are found
    in offline mode, and listed."""
    hf_home = tmp_path / "hf"
    data = safetensors_bytes(timm_weights())
    snapshot = fill_hf_cache(hf_home / "hub", ATTO_REPO, {"model.safetensors": data})
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "TORCH_HOME": str(tmp_path / "torch")}
    run = cli_subprocess("weights", "list", env=env)
    atto = next(line for line in run.stdout.splitlines() if line.startswith("convnext_atto "))
    assert f"{snapshot / 'model.safetensors'} (14.8 MB, sha256 {hashlib.sha256(data).hexdigest()})" in atto


@pytest.mark.slow
def test_torchvision_weights_download_checked_by_the_hash_in_their_name(tmp_path, torch_home) -> None:
    """torchvision's layout: a file whose name carries its sha256 prefix, downloaded from 127.0.0.1 into
    torch hub's cache; a file under another prefix is refused and nothing stays; a file in the cache
    under torchvision's own name is what ``pretrained: imagenet`` reads."""
    from torchvision.models import convnext_tiny

    state = convnext_tiny().state_dict()
    served = tmp_path / "served"
    served.mkdir()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    (served / f"convnext_tiny-{digest[:8]}.pth").write_bytes(buffer.getvalue())
    (served / "convnext_tiny-00000000.pth").write_bytes(buffer.getvalue())
    with RangeServer(served) as server:
        source = pretrained.WeightsSource("convnext_tiny", "torchvision", "convnext_tiny", server.url(f"convnext_tiny-{digest[:8]}.pth"))  # fmt: skip
        path = pretrained.download(source)
        assert path == torch_home / "hub" / "checkpoints" / f"convnext_tiny-{digest[:8]}.pth"
        bad = pretrained.WeightsSource("convnext_tiny", "torchvision", "convnext_tiny", server.url("convnext_tiny-00000000.pth"))  # fmt: skip
        with pytest.raises(CheckpointError, match="is corrupt"):
            pretrained.download(bad)
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    path.rename(path.parent / pretrained.weights_source("convnext_tiny").filename)
    model = BiCoRSeg(ModelConfig(num_classes=3, backbone="convnext_tiny", pretrained="imagenet", width=32))
    assert torch.equal(model.backbone.features[3][1].block[0].weight, state["features.3.1.block.0.weight"])
