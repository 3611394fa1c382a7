"""A model's files: the metadata every saved model carries, pretrained folders and the Hugging Face Hub.

:func:`metadata` is what every saved model (a checkpoint, a pretrained folder) carries: format
version 1 (the first: every key it writes is required when read), model configuration, dataset
facts, default :class:`Tiling`. :func:`save_pretrained` writes a pretrained folder (``config.json``
with the card's facts under ``"card"``, ``model.safetensors``, ``classes.yaml``, the ``README.md``
model card); :func:`read_pretrained` reads one, or a Hub repository (``hf://org/name``; extra
``hub``), for every ``--checkpoint``, with the checks docs/checkpoints.md lists, each fault one
:class:`CheckpointError` naming the file; :func:`push_to_hub` uploads one with huggingface_hub.
:class:`HubMixin` gives the network ``from_pretrained``, ``save_pretrained`` and ``push_to_hub``;
this module knows no network class: the functions that build one take it as ``network``.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar, cast

import torch

from bicorseg.atomic import OutputGroup, ensure_writable
from bicorseg.defaults import DEFAULT_OVERLAP, DEFAULT_TILE, MIN_TILE, VERSION, colour_hex
from bicorseg.errors import CheckpointError, ConfigError, InputError, OutputError, first_line, require_extra
from bicorseg.models.config import ModelConfig
from bicorseg.pretrained import quiet_hub
from bicorseg.spec import DatasetSpec
from bicorseg.text_files import MAX_BYTES, read_json_object
from bicorseg.torch_files import check_finite_weights
from bicorseg.typedconfig import to_yaml

FORMAT = "bicorseg"
FORMAT_VERSION = 1
CONFIG, WEIGHTS, CLASSES, CARD = "config.json", "model.safetensors", "classes.yaml", "README.md"
FILES = (CONFIG, WEIGHTS, CLASSES, CARD)
HUB_PREFIX = "hf://"
MAX_HEADER_BYTES = 16 << 20  # the safetensors header: names, dtypes, shapes (about 100 bytes a tensor)
_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")

Network = Callable[..., torch.nn.Module]  # a network class: Network(config) builds one
Pretrained = tuple[ModelConfig, dict[str, torch.Tensor], DatasetSpec | None, dict[str, Any], "Tiling"]
_Model = TypeVar("_Model", bound="HubMixin")


@dataclass(frozen=True)
class Tiling:
    """The tile size and overlap a model is applied with by default, and where they come from.

    BiCoR-Seg pools class embeddings over its whole input, so its predictions depend on the tile
    (docs/prediction.md, "Tiling honesty"): the default is the size the model saw in training,
    recorded with it (``source``: ``"checkpoint"``), else 512 px / 0.25 (``"default"``).
    """

    tile: int = DEFAULT_TILE
    overlap: float = DEFAULT_OVERLAP
    source: str = "default"

    def to_dict(self) -> dict[str, Any]:
        return {"tile": self.tile, "overlap": self.overlap}

    @classmethod
    def from_metadata(cls, meta: Mapping[str, Any]) -> Tiling:
        """The tiling recorded in a model's metadata, else the default; a malformed record is a
        :class:`CheckpointError`, never silently replaced."""
        recorded = meta.get("tiling")
        if recorded is None:
            return cls()
        tile = recorded.get("tile") if isinstance(recorded, Mapping) else None
        overlap = recorded.get("overlap") if isinstance(recorded, Mapping) else None
        if not (isinstance(tile, int) and not isinstance(tile, bool) and tile >= MIN_TILE):
            raise CheckpointError(f"tiling: the tile must be an integer of at least {MIN_TILE}, got {tile!r}")
        if not (isinstance(overlap, int | float) and not isinstance(overlap, bool) and 0.0 <= overlap < 1.0):
            raise CheckpointError(f"tiling: the overlap must be a number in [0, 1), got {overlap!r}")
        return cls(tile, float(overlap), "checkpoint")


class HubMixin:
    """``from_pretrained``, ``save_pretrained`` and ``push_to_hub`` for a network that has a
    ``config`` (:class:`ModelConfig`) and a ``dataset`` (:class:`DatasetSpec` or None) and is built
    as ``cls(config, dataset=dataset)`` (extra ``hub``: safetensors, huggingface_hub)."""

    config: ModelConfig
    dataset: DatasetSpec | None

    @classmethod
    def from_pretrained(
        cls: type[_Model],
        reference: str | os.PathLike[str],
        revision: str | None = None,
        map_location: str | torch.device = "cpu",
    ) -> _Model:
        """The model of a pretrained folder or a Hugging Face Hub repository (``org/name``,
        ``hf://org/name``), in evaluation mode on ``map_location``; ``revision``: a Hub branch, tag
        or commit."""
        config, state, dataset, _, _ = read_pretrained(reference, cls, revision)  # type: ignore[arg-type]
        model: Any = cls(replace(config, pretrained=None), dataset=dataset)  # type: ignore[call-arg]
        model.load_state_dict(state, strict=True)  # the names and shapes were checked when read
        return model.eval().to(map_location)  # type: ignore[no-any-return]

    def save_pretrained(self, folder: str | os.PathLike[str], **options: Any) -> Path:
        """Write this model as a pretrained folder (safetensors weights, config.json, classes.yaml,
        README.md model card); options of :func:`save_pretrained`."""
        return save_pretrained(self, folder, **options)

    def push_to_hub(self, repo_id: str, **options: Any) -> str:
        """Upload this model to the Hugging Face Hub repository ``repo_id`` (an account and a token
        needed); options of :func:`push_to_hub`. Returns the commit's URL."""
        return push_to_hub(self, repo_id, **options)


def metadata(model: HubMixin, tiling: Tiling | None = None) -> dict[str, Any]:
    """The metadata of a model (saved with its weights); ``tiling``: its default tile."""
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "bicorseg_version": VERSION,
        "model_config": model.config.to_dict(),
        "dataset": model.dataset.to_dict() if model.dataset is not None else None,
    }
    if tiling is not None and tiling.source != "default":
        meta["tiling"] = tiling.to_dict()
    return meta


def parse_metadata(
    meta: Mapping[str, Any], path: str | os.PathLike[str]
) -> tuple[ModelConfig, DatasetSpec | None, Tiling]:
    """The model configuration, dataset facts and tiling of a model's metadata (:func:`metadata`),
    checked: a :class:`CheckpointError` naming ``path`` for another format version or invalid data."""
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} is a bicorseg checkpoint of format version {meta.get('format_version')!r}; "
            f"this bicorseg reads version {FORMAT_VERSION}"
        )
    try:
        config = ModelConfig.from_dict(meta["model_config"])
        dataset = None if meta["dataset"] is None else DatasetSpec.from_dict(meta["dataset"])
        tiling = Tiling.from_metadata(meta)
    except (KeyError, TypeError, ValueError, AttributeError) as error:  # ConfigError among them
        detail = f"no {error.args[0]!r}" if isinstance(error, KeyError) else first_line(error)
        raise CheckpointError(f"{path} has invalid metadata: {detail}") from error
    return config, dataset, tiling


def _safetensors() -> Any:
    return require_extra("hub", ("safetensors.torch",), "pretrained folders")[0]


# --- writing -------------------------------------------------------------------------------------------


def save_pretrained(
    model: HubMixin | Any,
    folder: str | os.PathLike[str],
    *,
    tiling: Tiling | None = None,
    card: Mapping[str, Any] | None = None,
    licence: str | None = None,
    evaluation: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    repo_id: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` (a network with :class:`HubMixin`, or its precision wrapper) as a pretrained
    folder (see module docstring).

    ``tiling``: its default tile. ``card``: the card's facts already known (a checkpoint's ``extra``:
    training configuration, licence, evaluation), which ``licence`` and ``evaluation`` complete.
    ``licence``: the licence identifier the card declares (e.g. ``cc-by-4.0``; unstated if None).
    ``evaluation``: the report of ``bicorseg evaluate --output`` (a file or its content), shown in
    the card with its convention. ``repo_id``: the Hub repository the card's loading example names.
    The folder must be new or empty, or (``overwrite``) a pretrained folder; the files appear
    together, ``config.json`` last.
    """
    st = _safetensors()
    network = getattr(model, "model", model)  # an InferencePrecision wraps the network
    if not isinstance(network, HubMixin):
        raise ConfigError(f"expected a BiCoRSeg model, got {type(model).__name__}")
    folder = Path(folder).expanduser()
    ensure_writable(folder, folder=True)
    others = sorted(p.name for p in folder.iterdir() if p.name not in FILES) if folder.is_dir() else []
    if folder.is_dir() and any(folder.iterdir()) and not (overwrite and (folder / CONFIG).is_file()):
        raise OutputError(f"{folder} is not empty: choose a new folder (or `overwrite` a pretrained folder)")
    if others:
        raise OutputError(f"{folder} holds other files ({', '.join(others[:3])}): choose a new folder")
    card = dict(card or {})  # a re-saved folder keeps its card
    card["licence"] = licence or card.get("licence")
    card["evaluation"] = _evaluation(evaluation) if evaluation is not None else card.get("evaluation")
    meta = {**metadata(network, tiling), "card": card}
    try:
        config_text = json.dumps(meta, indent=2, allow_nan=False) + "\n"
    except (TypeError, ValueError) as error:
        raise ConfigError(f"the model card's facts are not plain JSON data: {first_line(error)}") from error
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}  # type: ignore[attr-defined]
    texts = {CONFIG: config_text, CARD: model_card(meta, repo_id)}
    if network.dataset is not None:
        from bicorseg.data.folder import class_table_yaml

        comment = "the classes of this model, as bicorseg train --data.class_table reads them"
        texts[CLASSES] = class_table_yaml(network.dataset, comment)
    folder.mkdir(parents=True, exist_ok=True)
    group = OutputGroup({name: folder / name for name in [WEIGHTS, *texts]}, last=CONFIG)
    with group:
        st.save_file(state, str(group.temp(WEIGHTS)), metadata={"format": "pt"})
        for name, text in texts.items():
            group.temp(name).write_text(text, encoding="utf-8")
        group.commit()
    if CLASSES not in texts:
        (folder / CLASSES).unlink(missing_ok=True)  # an overwritten folder's old class table
    return folder


def _evaluation(report: Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    where = "evaluation"
    if not isinstance(report, Mapping):
        where = str(report)
        report = read_json_object(report, "evaluation report", InputError)
    if not isinstance(report.get("convention"), Mapping) or "miou" not in report:
        raise ConfigError(f"{where}: not an evaluation report of bicorseg evaluate (no convention and miou)")
    return dict(report)


def model_card(meta: Mapping[str, Any], repo_id: str | None = None) -> str:
    """The README.md of a pretrained folder, from its config.json content (``repo_id``: where it is shared)."""
    config, dataset, card = meta["model_config"], meta.get("dataset"), meta.get("card") or {}
    licence, train, tiling = card.get("licence"), card.get("train_config"), meta.get("tiling")
    lines = [
        f"---\nlicense: {licence or 'unknown'}\nlibrary_name: bicorseg\npipeline_tag: image-segmentation",
        "tags: [bicorseg, semantic-segmentation, remote-sensing]\n---\n",
        f"# BiCoR-Seg: {dataset['name'] if dataset else 'model'}\n",
        f"A BiCoR-Seg semantic segmentation model ({config['num_classes']} classes, {config['in_channels']} "
        f"band(s); backbone {config['backbone']}, width {config['width']}, {config['layers']} HBIS layers), "
        f"saved by bicorseg {meta['bicorseg_version']}.\n\n## Classes\n",
    ]
    if dataset:
        lines += ["| index | class | colour | in the means |", "|---|---|---|---|"]
        lines += [
            f"| {i} | {label} | `{colour_hex(colour)}` | {'yes' if i in dataset['eval_classes'] else 'no'} |"
            for i, (label, colour) in enumerate(zip(dataset["class_names"], dataset["palette"]))
        ]
        lines += [
            f"\nIgnore index {dataset['ignore_index']}; class table: `classes.yaml`.\n\n## Bands and statistics\n",
            "The input is normalised as `(x - mean) / std` per band, in the raw units of the input:\n",
            "| band | mean | std |\n|---|---|---|",
            *(
                f"| {b} | {m:g} | {s:g} |"
                for b, m, s in zip(dataset["bands"], dataset["mean"], dataset["std"])
            ),
        ]
    else:
        lines.append("Not recorded: the classes are numbered, the input normalisation is the caller's.")
    if tiling:
        lines.append(f"\nApplied by default in tiles of {tiling['tile']} px with overlap {tiling['overlap']} (the size it was trained on).")  # fmt: skip
    lines.append("\n## Training data and recipe\n")
    if isinstance(train, Mapping):
        data = train.get("data") or {}
        lines.append(f"Dataset `{data.get('dataset')}`, trained with `bicorseg train`; its configuration:\n")
        lines.append(f"```yaml\n{to_yaml(train).rstrip(chr(10))}\n```")
    else:
        lines.append("Not recorded.")
    where, cli = (repo_id, f"hf://{repo_id}") if repo_id else ("path/to/this/folder", "path/to/this/folder")
    lines += [
        "\n## Evaluation\n",
        *_evaluation_lines(card.get("evaluation")),
        f"\n## Licence\n\n{licence or 'Not stated by the publisher of this model.'}\n\n## How to load it\n",
        'With bicorseg (`pip install "bicorseg[hub]"`):\n\n```python\nfrom bicorseg import BiCoRSeg\n',
        f'model = BiCoRSeg.from_pretrained("{where}")  # evaluation mode; input normalised as above\n```\n',
        f"```bash\nbicorseg predict scene.tif --checkpoint {cli} --output predictions/\n```\n",
    ]
    return "\n".join(lines)


def _evaluation_lines(report: Any) -> list[str]:
    if not isinstance(report, Mapping):
        return ["No evaluation recorded."]

    def pct(value: Any) -> str:
        return "n/a" if value is None else f"{100 * float(value):.2f}"

    lines = [
        f"mIoU {pct(report.get('miou'))} %, mean F1 {pct(report.get('mean_f1'))} %, "
        f"OA {pct(report.get('oa'))} % ({report.get('pixels')} pixels).\n\nConvention:\n",
        *(f"- {k}: {v}" for k, v in (report.get("convention") or {}).items() if v not in (None, "")),
    ]
    per_class = report.get("per_class")
    if isinstance(per_class, Mapping):
        lines += ["\n| class | IoU % | F1 % | in the means |", "|---|---|---|---|"]
        lines += [
            f"| {label} | {pct(scores.get('iou'))} | {pct(scores.get('f1'))} | "
            f"{'yes' if scores.get('in_means') else 'no'} |"
            for label, scores in per_class.items()
            if isinstance(scores, Mapping)
        ]
    return lines


# --- reading -------------------------------------------------------------------------------------------


def read_pretrained(
    reference: str | os.PathLike[str], network: Network, revision: str | None = None
) -> Pretrained:
    """The model configuration, weights, dataset facts, card and tiling of a pretrained folder or
    Hub repository (see module docstring), in the order of :class:`bicorseg.checkpoint.Checkpoint`;
    ``network``: the class the weights are checked against."""
    folder = resolve(reference, network, revision)
    config_path = folder / CONFIG
    if not config_path.is_file():
        raise CheckpointError(
            f"{folder} is a folder without {CONFIG}: give a checkpoint file (a run's checkpoints/best.ckpt) "
            "or a pretrained folder"
        )
    meta = read_json_object(config_path, "model configuration", CheckpointError)
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{config_path}: not a bicorseg model configuration (format {meta.get('format')!r})"
        )
    config, dataset, tiling = parse_metadata(meta, config_path)
    weights = folder / WEIGHTS
    expected = _expected_weights(network, config, weights)
    state = _read_weights(weights, expected)
    check_finite_weights(state, weights)
    if (folder / CLASSES).is_file():
        _check_class_table(folder / CLASSES, dataset)
    card = meta.get("card")
    return config, state, dataset, dict(card) if isinstance(card, Mapping) else {}, tiling


def _header(path: Path) -> dict[str, Any]:
    """The safetensors header of ``path`` (names, dtypes, shapes, offsets), bounded, without the data."""
    try:
        with open(path, "rb") as stream:
            start = stream.read(8)
            length = int.from_bytes(start, "little") if len(start) == 8 else -1
            if not 0 < length <= MAX_HEADER_BYTES:
                raise CheckpointError(f"{path}: not a safetensors file (header of {length} bytes)")
            header = json.loads(stream.read(length).decode("utf-8"))
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read the weights ({error.strerror or error})") from error
    except (UnicodeDecodeError, ValueError) as error:
        raise CheckpointError(f"{path}: not a safetensors file ({first_line(error)})") from error
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (its header is not a JSON object)")
    header.pop("__metadata__", None)
    return header


_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
           torch.int64: "I64", torch.int32: "I32", torch.uint8: "U8", torch.bool: "BOOL"}  # fmt: skip


def _expected_weights(network: Network, config: ModelConfig, weights: Path) -> dict[str, torch.Tensor]:
    """Every weight of ``config``'s network on the meta device (where nothing is allocated), once the
    header agrees with its width and layer count (so that a hostile configuration builds nothing
    large) and then with each weight's dtype and shape."""
    if not weights.is_file():
        raise CheckpointError(f"{weights}: the weights file is missing")
    header = _header(weights)
    table = header.get("class_embed")
    shape = table.get("shape") if isinstance(table, Mapping) else None
    if shape != [config.num_classes, config.width]:
        raise CheckpointError(
            f"{weights}: class_embed is {shape}, not the [{config.num_classes}, {config.width}] of config.json"
        )
    layers = {name.split(".")[1] for name in header if name.startswith("layers.")}
    if len(layers) != config.layers:
        raise CheckpointError(f"{weights}: {len(layers)} HBIS layers, config.json says {config.layers}")
    state = _meta_state(network, config)
    expected = {k: (_DTYPES.get(v.dtype, str(v.dtype)), tuple(v.shape)) for k, v in state.items()}
    found = {
        k: (v.get("dtype"), tuple(v.get("shape") or ())) for k, v in header.items() if isinstance(v, Mapping)
    }
    missing, unexpected = sorted(set(expected) - set(found)), sorted(set(header) - set(expected))
    if missing or unexpected:
        what = f"lacks {missing[0]}" if missing else f"has {unexpected[0]}, which the network does not"
        raise CheckpointError(
            f"{weights} does not fit config.json: it {what} ({len(missing)} missing, {len(unexpected)} unexpected)"
        )
    for key, (dtype, shape) in expected.items():
        if found[key] != (dtype, shape):
            raise CheckpointError(f"{weights}: {key} is {found[key][0]} {list(found[key][1])}, config.json needs {dtype} {list(shape)}")  # fmt: skip
    return state


def _read_weights(weights: Path, expected: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors of ``weights``, read into memory (not mapped: a file replaced later cannot pull
    them away), once its size is no more than the header and ``expected``'s tensors take."""
    st = _safetensors()
    from safetensors import SafetensorError

    try:
        with open(weights, "rb") as stream:
            limit = 8 + int.from_bytes(stream.read(8), "little")  # checked by _header: at most 16 MiB
            limit += _nbytes(expected)
            stream.seek(0)
            data = stream.read(limit + 1)
        if len(data) > limit:
            raise CheckpointError(f"{weights}: more than the {limit} bytes its header and tensors take")
        state: dict[str, torch.Tensor] = st.load(data)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights}: not a safetensors file ({first_line(error)})") from error
    if set(state) != set(expected):  # the header was read before: the same file holds the same names
        raise CheckpointError(f"{weights} changed while it was read")
    return state


def _nbytes(state: Mapping[str, torch.Tensor]) -> int:
    return sum(v.numel() * v.element_size() for v in state.values())


def _check_class_table(path: Path, dataset: Any) -> None:
    """The class table must say what config.json says (classes, colours, encoding, bands, statistics)."""
    from bicorseg.data.folder import ClassTable

    if dataset is None:
        raise CheckpointError(f"{path}: a class table, but config.json records no dataset facts")
    try:
        table = ClassTable.from_yaml(path)
        spec = table.spec(dataset.bands, dataset.mean, dataset.std)
    except ConfigError as error:
        raise CheckpointError(f"{path}: {error}") from error
    fields = ("class_names", "palette", "ignore_index", "eval_classes", "label_encoding")
    differ = [f for f in fields if getattr(spec, f) != getattr(dataset, f)]
    for name, value in (("bands", table.bands), ("mean", table.mean), ("std", table.std)):
        if value is not None and tuple(value) != tuple(getattr(dataset, name)):
            differ.append(name)
    if differ:
        raise CheckpointError(f"{path} disagrees with config.json: {', '.join(differ)}")


# --- the Hub -------------------------------------------------------------------------------------------


def _hub() -> Any:
    """huggingface_hub, or the one line that says which extra brings it."""
    hub = require_extra("hub", ("huggingface_hub",), "models on the Hugging Face Hub")[0]
    for part in ("constants", "errors", "utils"):  # the submodules used as attributes
        importlib.import_module(f"huggingface_hub.{part}")
    return hub


def resolve(reference: str | os.PathLike[str], network: Network, revision: str | None = None) -> Path:
    """The local folder of ``reference``: a folder as it is; ``hf://org/name`` (or, given as a string,
    ``org/name`` that is not a folder here) from the Hugging Face cache, downloaded there first unless
    ``HF_HUB_OFFLINE`` is set. A Hub file is refused from its published size (the weights: those of
    ``network`` built with the repository's configuration) before it is downloaded."""
    text = str(reference)
    if not text.startswith(HUB_PREFIX):
        path = Path(text).expanduser()
        if path.is_dir():
            return path
        if isinstance(reference, os.PathLike) or not _REPO_ID.fullmatch(text):
            raise CheckpointError(f"{reference}: not a pretrained folder (config.json, model.safetensors)")
    repo_id, _, at = text.removeprefix(HUB_PREFIX).partition("@")
    revision = revision or at or None
    where = f"{HUB_PREFIX}{repo_id}" + (f"@{revision}" if revision else "")
    hub = _hub()
    errors = hub.errors
    try:
        with quiet_hub():
            folder = _hub_folder(hub, repo_id, revision, network)
    except errors.HFValidationError as error:
        raise ConfigError(f"{where}: not a Hub repository id ({first_line(error)})") from error
    # before EntryNotFoundError, of which LocalEntryNotFoundError is a subclass
    except (errors.LocalEntryNotFoundError, errors.OfflineModeIsEnabled) as error:
        raise _unreachable(hub, where, error) from error
    except errors.RepositoryNotFoundError as error:
        raise CheckpointError(
            f"{where}: no such repository on the Hub (or it is private: log in first)"
        ) from error
    except errors.RevisionNotFoundError as error:
        raise CheckpointError(f"{where}: no such revision on the Hub") from error
    except errors.EntryNotFoundError as error:
        raise CheckpointError(f"{where}: not a bicorseg model (no {CONFIG} and {WEIGHTS})") from error
    except (errors.HfHubHTTPError, OSError) as error:
        raise _unreachable(hub, where, error) from error
    return folder


def _hub_folder(hub: Any, repo_id: str, revision: str | None, network: Network) -> Path:
    """The snapshot folder of ``repo_id`` in the Hugging Face cache, with config.json and the weights
    (and classes.yaml where the repository has one); the weights' published size is checked against
    the configuration first."""
    hub.utils.validate_repo_id(repo_id)
    config = _hub_file(hub, repo_id, CONFIG, revision, MAX_BYTES)
    assert config is not None  # not optional: missing, it raised
    meta = read_json_object(config, "model configuration", CheckpointError)
    model_config, _, _ = parse_metadata(meta, config)
    weights_bytes = _nbytes(_meta_state(network, model_config)) + MAX_HEADER_BYTES + 8
    _hub_file(hub, repo_id, WEIGHTS, revision, weights_bytes)
    _hub_file(hub, repo_id, CLASSES, revision, MAX_BYTES, optional=True)
    return config.parent


def _unreachable(hub: Any, where: str, error: BaseException) -> CheckpointError:
    offline = hub.constants.HF_HUB_OFFLINE
    reason = "HF_HUB_OFFLINE is set" if offline else first_line(error.__cause__ or error)
    return CheckpointError(
        f"{where} is not in the Hugging Face cache ({hub.constants.HF_HUB_CACHE}) and cannot be downloaded "
        f"({reason}): download it on a machine with network access and copy the cache, or give a local folder"
    )


def _meta_state(network: Network, config: ModelConfig) -> dict[str, torch.Tensor]:
    """The weights ``config``'s network has, on the meta device, where nothing is allocated."""
    with torch.device("meta"):
        return network(replace(config, pretrained=None)).state_dict()


def _hub_file(
    hub: Any, repo_id: str, name: str, revision: str | None, limit: int, optional: bool = False
) -> Path | None:
    """One file of a Hub repository in the cache; online, its published size is checked first."""
    errors = hub.errors
    if not hub.constants.HF_HUB_OFFLINE:
        try:
            info = hub.get_hf_file_metadata(hub.hf_hub_url(repo_id, name, revision=revision))
        except errors.EntryNotFoundError:
            if optional:
                return None
            raise
        except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError):
            raise
        except Exception:  # the Hub unreachable (the HTTP client's errors are not wrapped here):
            info = None  # hf_hub_download below falls back to the cache, or says it cannot
        if info is not None and info.size is not None and info.size > limit:
            raise CheckpointError(
                f"{HUB_PREFIX}{repo_id}: {name} is {info.size} bytes, more than the {limit} it may hold"
            )
    try:
        return Path(hub.hf_hub_download(repo_id, name, revision=revision, library_name="bicorseg"))
    except (errors.EntryNotFoundError, errors.LocalEntryNotFoundError):
        if optional:
            return None
        raise


def check_repo_id(repo_id: str) -> Any:
    """Refuse a repository id the Hub would refuse (``org/name``); returns huggingface_hub."""
    hub = _hub()
    try:
        hub.utils.validate_repo_id(repo_id)
    except hub.errors.HFValidationError as error:
        raise ConfigError(f"not a Hub repository id: {first_line(error)}", key="repo_id") from error
    if "/" not in repo_id:
        raise ConfigError(f"not a Hub repository id: {repo_id!r} (give ORG/NAME)", key="repo_id")
    return hub


def push_to_hub(
    model: HubMixin | str | os.PathLike[str],
    repo_id: str,
    *,
    network: Network | None = None,
    private: bool | None = None,
    token: str | None = None,
    commit_message: str = "Upload a bicorseg model",
    **save_options: Any,
) -> str:
    """Upload a pretrained folder (or a model, saved to one first with ``save_options``) to the Hub
    repository ``repo_id``, created if missing; returns the commit's URL. Needs an account and a
    token (``hf auth login``, or ``token``). The folder is read back first, as a user would, with
    ``network``, the model's class (a folder needs it: ``BiCoRSeg``)."""
    hub = check_repo_id(repo_id)
    with tempfile.TemporaryDirectory(prefix="bicorseg-hub-") as scratch:
        if isinstance(model, str | os.PathLike):
            folder = Path(model)
            if not folder.is_dir():
                raise CheckpointError(f"{folder}: not a pretrained folder")
        else:
            folder = save_pretrained(model, Path(scratch) / "model", repo_id=repo_id, **save_options)
            network = network or cast(Network, type(model))
        if network is None:
            raise ConfigError("give the network class of the folder's model", key="network")
        read_pretrained(folder, network)
        api = hub.HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id, folder_path=folder, allow_patterns=list(FILES), commit_message=commit_message
        )
    return str(info.commit_url)
