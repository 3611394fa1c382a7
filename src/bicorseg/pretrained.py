"""ImageNet weights of the backbones: where each is published, where it is cached, and how it gets there.

``pretrained: imagenet`` reads the backbone's weights from the cache of the library that publishes
them (torchvision's ConvNeXts: torch hub's ``$TORCH_HOME/hub/checkpoints/``; timm's, short names and
``timm:<model>``: the ``model.safetensors`` of ``timm/<model>.<tag>`` in the Hugging Face cache),
downloading them there once when they are missing and the machine has network access; docs/install.md
("Machines without network access") has the table and the offline procedure (:func:`download`,
:func:`import_weights`: the ``bicorseg weights`` command). A download is checked against the
published sha256 (torchvision's: the 8 hex digits of its file name; timm's: the Hub's). Every file
is read without unpickling objects (``weights_only`` for torch files, safetensors for timm's), its
size bounded by the model's, every weight finite, and its keys and shapes those of the backbone
(the classifier head may be absent).
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import logging
import math
import os
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bicorseg.atomic import atomic_output, sha256_file
from bicorseg.errors import CheckpointError, ConfigError, InputError, OutputError, first_line, require_extra
from bicorseg.torch_files import check_finite_weights, read_torch_file

# The short names of timm's smallest ConvNeXts (ImageNet-1k): bicorseg's own ``convnext_nano`` is
# another network (no weights), so timm's nano is ``timm:convnext_nano``.
TIMM_SHORT_NAMES = ("convnext_atto", "convnext_femto", "convnext_pico")
TORCHVISION_CONVNEXT_NAMES = ("convnext_tiny", "convnext_small", "convnext_base")
TORCHVISION_RESNET_NAMES = ("resnet18", "resnet34", "resnet50")
TORCHVISION_NAMES = (*TORCHVISION_CONVNEXT_NAMES, *TORCHVISION_RESNET_NAMES)
# the names ``bicorseg weights list`` shows; any other ``timm:<model>`` with Hub weights works too
LISTED_NAMES = (*TORCHVISION_NAMES, *TIMM_SHORT_NAMES, "timm:convnext_nano")

HF_FILENAME = "model.safetensors"
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class WeightsSource:
    """Where the ImageNet weights of one backbone are published and cached."""

    name: str  # the backbone name of the model configuration (convnext_tiny, timm:convnext_nano)
    library: str  # torchvision or timm
    model: str  # the library's model name (timm's with its weights tag, convnext_atto.d2_in1k)
    url: str  # where the file is published
    repo_id: str | None = None  # the Hugging Face repository (timm's)

    @property
    def filename(self) -> str:
        """The published file's name: what to carry over to an offline machine."""
        return HF_FILENAME if self.repo_id else self.url.rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self) -> str | None:
        """The start of the sha256 that torchvision's file name carries (``...-983f1562.pth``)."""
        found = torch.hub.HASH_REGEX.search(self.filename) if self.library == "torchvision" else None
        return found.group(1) if found else None

    @property
    def import_path(self) -> Path:
        """Where :func:`import_weights` puts the file (torchvision's: where torchvision looks)."""
        name = self.filename if self.library == "torchvision" else f"{self.model}.safetensors"
        return checkpoints_dir() / name


def checkpoints_dir() -> Path:
    """torch hub's checkpoints folder, ``$TORCH_HOME/hub/checkpoints`` (read from the environment now)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def _timm() -> Any:
    return require_extra("timm", ("timm",), "timm's backbones")[0]


def weights_source(backbone: str) -> WeightsSource:
    """The :class:`WeightsSource` of a backbone name; a :class:`ConfigError` for one without ImageNet weights."""
    if backbone in TORCHVISION_NAMES:
        from torchvision.models import get_model_weights

        url = get_model_weights(backbone).IMAGENET1K_V1.url
        return WeightsSource(backbone, "torchvision", backbone, url)
    if backbone in TIMM_SHORT_NAMES or backbone.startswith("timm:"):
        timm = _timm()
        model = backbone.removeprefix("timm:")
        try:
            config = timm.models.get_pretrained_cfg(model)
        except (RuntimeError, ValueError) as error:
            raise ConfigError(f"backbone {backbone!r}: {first_line(error)}") from error
        if config is None or not config.hf_hub_id or config.custom_load or config.hf_hub_filename:
            raise ConfigError(
                f"backbone {backbone!r}: timm publishes no ImageNet weights on the Hugging Face Hub for "
                f"{model!r}; set pretrained to a local weights file"
            )
        tag = f"{config.architecture}.{config.tag}" if config.tag else config.architecture
        repo_id = config.hf_hub_id
        url = f"https://huggingface.co/{repo_id}/resolve/main/{HF_FILENAME}"
        return WeightsSource(backbone, "timm", tag, url, repo_id)
    if backbone == "convnext_nano":
        raise ConfigError(
            "backbone 'convnext_nano' (bicorseg's small ConvNeXt) has no pretrained weights: set pretrained "
            "to null, or use convnext_atto, convnext_femto, convnext_pico or timm:convnext_nano (timm's, "
            "with ImageNet weights)"
        )
    raise ConfigError(f"backbone {backbone!r} has no ImageNet weights; known: {', '.join(LISTED_NAMES)}")


# --- the reference layout ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def reference_shapes(source: WeightsSource) -> tuple[dict[str, tuple[int, ...]], str]:
    """The shape of every weight of the published network, and the prefix of its classifier head
    (keys that a file may leave out). Built on the meta device: nothing is allocated."""
    with torch.device("meta"):
        if source.library == "torchvision":
            from torchvision.models import get_model

            network = get_model(source.model, weights=None)
            head = "fc." if source.model in TORCHVISION_RESNET_NAMES else "classifier."
        else:
            timm = _timm()
            network = timm.create_model(source.model, pretrained=False)
            head = str(network.pretrained_cfg.get("classifier") or "head").split(".")[0] + "."
    return {k: tuple(v.shape) for k, v in network.state_dict().items()}, head


def read_weights(path: str | os.PathLike, source: WeightsSource) -> dict[str, torch.Tensor]:
    """The state dict in the file ``path``, checked to be the ImageNet weights of ``source``'s network.

    torchvision's files are read with ``weights_only`` (tensors and plain data), timm's as safetensors
    (no code at all). Refused with one line naming the file: a file larger than twice the network's
    float32 weights, a non-finite weight, a missing backbone weight, a key the network does not have,
    a shape that differs.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"pretrained weights file not found: {path}")
    shapes, head = reference_shapes(source)
    limit = 2 * 4 * sum(math.prod(s) for s in shapes.values()) + (16 << 20)
    size = path.stat().st_size
    if size > limit:
        raise CheckpointError(
            f"{path} holds {size} bytes, more than the {limit} bytes the weights of {source.name} can take"
        )
    state = _load(path, source)
    check_finite_weights(state, path)
    unexpected = sorted(set(state) - set(shapes))
    missing = sorted(k for k in shapes if k not in state and not k.startswith(head))
    if unexpected or missing:
        what = (
            f"has no weight {missing[0]}"
            if missing
            else f"has a weight {unexpected[0]} that it does not know"
        )
        count = len(missing) + len(unexpected)
        raise CheckpointError(
            f"{path} is not {source.name}'s weights ({source.model}): the network {what}"
            + (f" ({count} keys differ)" if count > 1 else "")
        )
    for key, value in sorted(state.items(), key=lambda item: item[0].startswith(head)):  # the head last
        if tuple(value.shape) != shapes[key]:
            raise CheckpointError(
                f"{path} is not {source.name}'s weights ({source.model}): {key} is "
                f"{tuple(value.shape)}, the network's is {shapes[key]}"
            )
    return state


def is_safetensors(path: Path) -> bool:
    """Whether the file starts as a safetensors file does: an 8-byte header length, then JSON."""
    with open(path, "rb") as stream:
        start = stream.read(9)
    return len(start) == 9 and start[8:9] == b"{"


def _load(path: Path, source: WeightsSource) -> dict[str, torch.Tensor]:
    """A safetensors file (no code at all), or a torch file read with ``weights_only``."""
    if is_safetensors(path):
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(f"cannot read {path} as safetensors: {first_line(error)}") from error
    state = read_torch_file(path, what="pretrained weights")
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path} does not hold a state dict (names and tensors)")
    return state


# --- the caches --------------------------------------------------------------------------------------


def cached_file(source: WeightsSource) -> Path | None:
    """The cached file of ``source``'s weights, or None: torch hub's checkpoints folder, then (timm)
    the Hugging Face cache as huggingface_hub sees it."""
    if source.import_path.is_file():
        return source.import_path
    if source.repo_id is not None:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(source.repo_id, HF_FILENAME)
        if isinstance(found, str) and Path(found).is_file():
            return Path(found)
    return None


@contextlib.contextmanager
def quiet_hub() -> Iterator[None]:
    """huggingface_hub's warnings held back (its retries of an unreachable Hub, one line each): the
    error that follows says what failed, in one line."""
    import huggingface_hub.file_download  # noqa: F401  # importing it sets the library's log level: first

    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def imagenet_weights(backbone: str) -> dict[str, torch.Tensor]:
    """The checked ImageNet state dict of ``backbone``: from the cache, downloaded there first if missing.

    Without the file and without network access (or in huggingface_hub's offline mode for timm's), a
    :class:`ConfigError` says which command fetches it and which file to carry over.
    """
    source = weights_source(backbone)
    path = cached_file(source)
    if path is None:
        try:
            path = _fetch(source)
        except _Unreachable as error:
            raise ConfigError(
                f"pretrained 'imagenet': the weights of backbone {source.name} are not cached and cannot be "
                f"downloaded from {source.url} ({error}); on a machine with network access run "
                f"'bicorseg weights download {source.name}', carry the file it names ({source.filename}) "
                f"over and run 'bicorseg weights import FILE --name {source.name}' here, or set pretrained "
                "to a local weights file"
            ) from error
    return read_weights(path, source)


def download(source: WeightsSource) -> Path:
    """Download ``source``'s weights into its library's cache (checked) and return the file.

    torchvision's: to a temporary file, checked against the sha256 prefix of its name, then renamed
    (as torch hub does). timm's: with huggingface_hub (its endpoint, proxy, token and cache settings),
    then checked against the sha256 the Hub published for it. Either way the content is checked
    (:func:`read_weights`).
    """
    try:
        return _fetch(source)
    except _Unreachable as error:
        raise InputError(
            f"cannot download the weights of {source.name} from {source.url}: {error}"
        ) from error


class _Unreachable(Exception):
    """The weights could not be fetched: no network, a proxy or DNS failure, offline mode, not published."""


def _fetch(source: WeightsSource) -> Path:
    if source.repo_id is None:
        target = source.import_path
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            torch.hub.download_url_to_file(
                source.url, str(target), source.sha256_prefix, progress=sys.stderr.isatty()
            )
        except (OSError, http.client.HTTPException) as error:  # no network, proxy or DNS failure
            raise _Unreachable(first_line(error)) from error
        except RuntimeError as error:  # the hash check
            raise CheckpointError(f"the download of {source.url} is corrupt: {first_line(error)}") from error
    else:
        from huggingface_hub import constants, hf_hub_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

        if constants.HF_HUB_OFFLINE:
            raise _Unreachable("HF_HUB_OFFLINE is set")
        try:
            with quiet_hub():
                target = Path(hf_hub_download(source.repo_id, HF_FILENAME, library_name="bicorseg"))
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as error:
            # huggingface_hub wraps a connection failure; its cause says what failed
            cause = error.__cause__ if isinstance(error, LocalEntryNotFoundError) else None
            raise _Unreachable(first_line(cause or error)) from error
        blob = target.resolve()  # the cache names a file by the Hub's etag: its published sha256
        if _SHA256.fullmatch(blob.name):
            digest = sha256_file(target)
            if digest != blob.name:  # nothing that failed the check stays in the cache
                target.unlink(missing_ok=True)
                blob.unlink(missing_ok=True)
                raise CheckpointError(
                    f"{target}: sha256 {digest} is not the {blob.name} published for {source.url}"
                )
    read_weights(target, source)
    return target


@dataclass(frozen=True)
class Imported:
    """What :func:`import_weights` did: the installed file, its sha256, and how it was checked."""

    path: Path
    sha256: str
    checked: str  # e.g. "sha256 prefix 983f1562 of the published file name", or what was not checked
    replaced: bool = False


def import_weights(
    file: str | os.PathLike,
    backbone: str | WeightsSource,
    *,
    sha256: str | None = None,
    overwrite: bool = False,
) -> Imported:
    """Install a weights file carried over by hand as ``backbone``'s ImageNet weights (offline).

    Checked before anything is written: the sha256 against the published one where it is known
    (torchvision's file name prefix; ``sha256`` when given, e.g. the one ``bicorseg weights list``
    shows on the machine that downloaded it or the one the Hub's file page shows), then the content
    (:func:`read_weights`). Installed by a temporary copy renamed into place. An installed file with
    other content is replaced only with ``overwrite``.
    """
    source = backbone if isinstance(backbone, WeightsSource) else weights_source(backbone)
    file = Path(file).expanduser()
    if not file.is_file():
        raise InputError(f"weights file not found: {file}")
    if sha256 is not None and not _SHA256.fullmatch(sha256.lower()):
        raise ConfigError(f"expected 64 hexadecimal digits, got {sha256!r}", key="sha256")
    if source.library == "timm" and not is_safetensors(file):
        raise CheckpointError(
            f"{file} is not a safetensors file: {source.name}'s weights are imported as the "
            f"{HF_FILENAME} of {source.repo_id}"
        )
    digest = sha256_file(file)
    expected = sha256 or source.sha256_prefix
    if expected and not digest.startswith(expected.lower()):
        published = "the sha256 given" if sha256 else f"the sha256 prefix of the published {source.filename}"
        raise CheckpointError(
            f"{file} is not {source.name}'s published weights: its sha256 {digest[:16]}... does not "
            f"match {published} ({expected.lower()[:16]})"
        )
    read_weights(file, source)
    target = source.import_path
    replaced = target.is_file()
    if replaced and sha256_file(target) != digest and not overwrite:
        raise OutputError(f"{target} holds other weights of {source.name} (use `overwrite` to replace them)")
    with atomic_output(target) as temp:
        shutil.copyfile(file, temp)
    if sha256:
        checked = "sha256 as given"
    elif source.sha256_prefix:
        checked = f"sha256 prefix {source.sha256_prefix} of the published file name"
    else:
        checked = f"no published sha256 known offline: compare {digest} with the one on {source.url}"
    return Imported(target, digest, checked, replaced)


@dataclass(frozen=True)
class CacheEntry:
    """One backbone's weights as ``bicorseg weights list`` shows them."""

    source: WeightsSource
    path: Path | None  # None: not cached
    size: int | None = None
    sha256: str | None = None


def list_weights() -> list[CacheEntry]:
    """The cache state of each backbone of :data:`LISTED_NAMES` (timm's are left out when timm is not installed)."""
    entries = []
    for name in LISTED_NAMES:
        try:
            source = weights_source(name)
        except ConfigError:  # timm not installed
            continue
        path = cached_file(source)
        if path is None:
            entries.append(CacheEntry(source, None))
        else:
            entries.append(CacheEntry(source, path, path.stat().st_size, sha256_file(path)))
    return entries


def cache_locations() -> dict[str, Path]:
    """The cache folders in use: torch hub's checkpoints and (with huggingface_hub) the Hugging Face hub cache."""
    where = {"torch hub": checkpoints_dir()}
    try:
        from huggingface_hub import constants
    except ImportError:
        return where
    where["Hugging Face"] = Path(constants.HF_HUB_CACHE)
    return where
