"""Opening input rasters safely: no network access unless asked for, and a limit on pixel counts.

Every input raster bicorseg reads is opened by :func:`open_raster`, and the GDAL environment of
those reads is set here, in one place:

* **Remote access is off by default.** A path that names a remote source (``/vsicurl/``,
  ``/vsis3/`` and the other network file systems, ``http://`` and other URLs, GDAL's web-service
  connection strings such as ``WMS:``) is refused, and so is a local file that refers to one: a
  VRT whose ``SourceFilename`` entries (followed through nested local VRTs) are remote, a local
  web-service description (``<GDAL_WMS>``, ``<GDAL_WMTS>``, ``<WCS_GDAL>``), a dataset opened by a
  web-service driver, or a dataset whose file list (``dataset.files``) names a remote file. The
  checks run before GDAL reads any pixel, and while remote access is off GDAL's network file
  systems are disabled too (``CPL_VSIL_CURL_ALLOWED_EXTENSIONS`` matches no file), so a
  reference the checks did not see still cannot reach the network. Remote access is allowed by
  ``allow_remote=True`` or the environment variable ``BICORSEG_ALLOW_REMOTE=1`` (which the
  command line's ``--allow-remote`` sets for the command, worker processes included); GDAL then
  does not list the folder of a remote path (``GDAL_DISABLE_READDIR_ON_OPEN=EMPTY_DIR``; local
  files keep their sidecar files, such as world files).
* **A remote input named by the user is the user's request.** :func:`input_path` turns what a user
  typed into what is opened: a local :class:`~pathlib.Path`, or a :class:`VsiPath` for a URL or a
  GDAL virtual file system path (``https://h/x.tif`` and ``http://`` -> ``/vsicurl/https://h/x.tif``,
  ``s3://b/k`` -> ``/vsis3/b/k``, ``gs://`` -> ``/vsigs/``, ``az://`` -> ``/vsiaz/``, ``/vsi...`` as
  it is). A :class:`VsiPath` is made only from a name the user gave, so opening a remote one needs
  no ``allow_remote``: the rule is that inputs never reach the network unless the user asked for
  a remote path, and naming one is asking. ``allow_remote`` is still needed for a local
  file that refers to remote sources (a VRT, a STAC item with remote assets), which the user did not
  name. Credentials come from GDAL's usual environment (``AWS_*``, ``AWS_NO_SIGN_REQUEST=YES``,
  ``GS_*``, ``AZURE_STORAGE_*``). A remote dataset may not refer to local files (a remote VRT whose
  sources are on this machine is refused before a pixel is read).
* **Remote reads are ranged and cached.** While remote access is allowed, GDAL fetches several
  ranges of a file per request or in parallel (``GDAL_HTTP_MULTIRANGE=YES``), merges consecutive
  ones (``GDAL_HTTP_MERGE_CONSECUTIVE_RANGES=YES``), retries failed requests
  (:data:`REMOTE_OPTIONS`) and keeps at most :data:`REMOTE_CACHE_BYTES` of downloaded blocks;
  a remote path is also read through GDAL's per-file cache (``VSI_CACHE``, at most
  :data:`VSI_CACHE_BYTES` per open file). A variable the user set in the environment is left as
  it is, so every one of these can be tuned.
* **VRT Python code never runs** (``GDAL_VRT_ENABLE_PYTHON=NO``).
* **Pixel limit.** An image read whole (PNG, JPEG and the other plain picture formats, and every
  whole-image read of :mod:`bicorseg.data.io`) may not declare more than :data:`DEFAULT_MAX_PIXELS`
  pixels (width x height); ``max_pixels=`` or the environment variable ``BICORSEG_MAX_PIXELS``
  sets another limit. The declared size is checked from the header, before anything is decoded.
  Rasters read in windows (GeoTIFF and the like in ``predict``) have no such limit: their memory
  does not grow with their size.
"""

from __future__ import annotations

import os
import re
import warnings
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from bicorseg.errors import ConfigError, InputError, first_line

ALLOW_REMOTE_ENV = "BICORSEG_ALLOW_REMOTE"
MAX_PIXELS_ENV = "BICORSEG_MAX_PIXELS"
# 2**31 pixels: a 46340 x 46340 image, 6 GiB as 8-bit RGB; far above any aerial tile read whole
DEFAULT_MAX_PIXELS = 2**31
# formats GDAL cannot read in windows cheaply, which bicorseg holds whole in memory
WHOLE_IMAGE_DRIVERS = frozenset({"PNG", "JPEG", "GIF", "BIGGIF", "BMP", "WEBP"})
# drivers that fetch their data over HTTP themselves (not through GDAL's /vsi network file systems)
NETWORK_DRIVERS = frozenset(
    {"WMS", "WMTS", "WCS", "EEDA", "EEDAI", "PLMOSAIC", "DAAS", "NGW", "OGCAPI", "STACIT", "STACTA", "HTTP"}
)
# also GDAL's option form, /vsicurl?url=...
_NETWORK_VSI = re.compile(r"/vsi(curl|s3|gs|az|adls|oss|swift|webhdfs|hdfs)(_streaming)?[/?]", re.IGNORECASE)
_URL = re.compile(r"\b([a-z][a-z0-9+.-]*)://", re.IGNORECASE)
_CONNECTION = re.compile(r"^(" + "|".join(sorted(NETWORK_DRIVERS)) + r"):", re.IGNORECASE)
# looked for in a file's first KiB, as GDAL identifies these formats by content (whatever the name)
_SERVICE_XML = re.compile(rb"<\s*(GDAL_WMS|GDAL_WMTS|WCS_GDAL|GDAL_WCS)\b")
_VRT_XML = re.compile(rb"<\s*VRTDataset\b")
# a local VRT is read whole to find its sources; larger ones are refused rather than parsed
MAX_VRT_BYTES = 64 * 2**20
MAX_VRT_DEPTH = 8
ALLOW_REMOTE_HELP = (
    "let inputs read remote sources (/vsicurl/, /vsis3/, URLs, web services), also through local VRT "
    "files that refer to them; off by default, so that no input reaches the network unasked"
)
# matches no real file name: GDAL's network file systems refuse everything while remote access is off
_NO_REMOTE_EXTENSION = ".bicorseg-remote-access-is-off"
# URL schemes of remote inputs and the GDAL virtual file system that reads each
URL_FILE_SYSTEMS = {
    "https": "/vsicurl/",
    "http": "/vsicurl/",
    "s3": "/vsis3/",
    "gs": "/vsigs/",
    "az": "/vsiaz/",
}
_SCHEME = re.compile(r"^([a-z][a-z0-9+.-]*)://", re.IGNORECASE)
_INNER_URL = re.compile(r"[a-z][a-z0-9+.-]*://(?!.*://).*$", re.IGNORECASE)
# GDAL's global cache of blocks downloaded by its network file systems (its default is 16 MiB)
REMOTE_CACHE_BYTES = 128 * 2**20
# GDAL's per-file read cache for a remote path (its default is 25 MB)
VSI_CACHE_BYTES = 64 * 2**20
# while remote access is allowed: ranged reads, merged and several per request, retried
REMOTE_OPTIONS = {
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MAX_RETRY": "4",  # on HTTP 429, 500, 502, 503, 504 and dropped connections
    "GDAL_HTTP_RETRY_DELAY": "1",  # seconds, doubled at each retry
    "CPL_VSIL_CURL_CACHE_SIZE": str(REMOTE_CACHE_BYTES),
}
# for a remote path itself: no folder listing (no sidecar files are looked for), a per-file cache
REMOTE_PATH_OPTIONS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(VSI_CACHE_BYTES),
}


@dataclass(frozen=True)
class VsiPath:
    """An input named by a URL or a GDAL virtual file system path (see :func:`input_path`).

    ``given`` is the name as the user wrote it (used in messages), ``gdal`` what GDAL opens
    (``os.fspath`` gives it). ``name``, ``stem`` and ``suffix`` are those of the last component of
    the path, without a URL's query string, so ``https://h/a/scene.tif?sig=x`` writes ``scene.tif``.
    The few :class:`~pathlib.Path` methods the predictor asks an input for answer as for a file
    that is not on the local disk (``stat`` raises ``FileNotFoundError``).
    """

    given: str
    gdal: str

    def __fspath__(self) -> str:
        return self.gdal

    def __str__(self) -> str:
        return self.given

    @property
    def remote(self) -> bool:
        """Whether GDAL reaches the network to read it (``/vsizip/local.zip/x.tif`` does not)."""
        return is_remote(self.gdal)

    @property
    def name(self) -> str:
        text = self.gdal
        if text.lower().startswith("/vsicurl?"):  # /vsicurl?url=...&other=options
            text = parse_qs(text[len("/vsicurl?") :]).get("url", [""])[0]
        url = _INNER_URL.search(text)
        if url is not None:  # the path of the (innermost) URL, without query or fragment
            text = unquote(urlsplit(url.group(0)).path)
        return text.rsplit("/", 1)[-1]

    @property
    def stem(self) -> str:
        return PurePath(self.name).stem

    @property
    def suffix(self) -> str:
        return PurePath(self.name).suffix

    def resolve(self) -> VsiPath:
        return self

    def is_file(self) -> bool:
        return False  # not a local file; GDAL tells whether it can be opened

    def is_dir(self) -> bool:
        return False

    def exists(self) -> bool:
        return False

    def stat(self) -> os.stat_result:
        raise FileNotFoundError(f"{self.given} is not a local file")


def virtual_path(name: str | os.PathLike) -> VsiPath | None:
    """The :class:`VsiPath` of a URL or ``/vsi...`` name, None for a local path.

    ``file://`` URLs and anything without a scheme are local. A URL of another scheme raises an
    :class:`InputError` naming the schemes that are read.
    """
    if isinstance(name, VsiPath):
        return name
    if isinstance(name, PurePath):  # a Path has already folded the "//" of a URL: it is local
        return None
    text = os.fspath(name)
    match = _SCHEME.match(text)
    if text.startswith("/vsi"):
        path = VsiPath(text, text)
    elif match is None or match.group(1).lower() == "file":
        return None
    else:
        scheme = match.group(1).lower()
        system = URL_FILE_SYSTEMS.get(scheme)
        if system is None:
            supported = ", ".join(f"{s}://" for s in URL_FILE_SYSTEMS)
            raise InputError(
                f"{text}: URLs of {scheme}:// are not read (supported: {supported} and /vsi... paths)"
            )
        path = VsiPath(text, system + (text if system == "/vsicurl/" else text[match.end() :]))
    if not path.name:
        raise InputError(f"{text}: names no file (the path ends with /)")
    return path


def input_path(name: str | os.PathLike) -> Path | VsiPath:
    """What a user named as an input: a :class:`VsiPath` for a URL or ``/vsi...`` path, else a Path."""
    virtual = virtual_path(name)
    if virtual is not None:
        return virtual
    text = os.fspath(name)
    if not isinstance(name, PurePath) and text[:7].lower() == "file://":
        return Path(unquote(urlsplit(text).path))
    return Path(name)


def remote_allowed(allow_remote: bool | None = None) -> bool:
    """``allow_remote`` when given, else whether ``BICORSEG_ALLOW_REMOTE`` is set to 1/true/yes."""
    if allow_remote is not None:
        return bool(allow_remote)
    return os.environ.get(ALLOW_REMOTE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@contextmanager
def remote_access(allow: bool) -> Iterator[None]:
    """Within the block, :func:`open_raster` allows remote sources when ``allow`` (also in child processes)."""
    previous = os.environ.get(ALLOW_REMOTE_ENV)
    if allow:
        os.environ[ALLOW_REMOTE_ENV] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(ALLOW_REMOTE_ENV, None)
        else:
            os.environ[ALLOW_REMOTE_ENV] = previous


def is_remote(name: str | os.PathLike) -> bool:
    """True when GDAL would reach the network to open ``name`` (network /vsi path, URL, service string)."""
    text = os.fspath(name)
    if _NETWORK_VSI.search(text) or _CONNECTION.match(text):
        return True
    return any(scheme.lower() != "file" for scheme in _URL.findall(text))


def max_pixels(limit: int | None = None) -> int:
    """The pixel limit in force: ``limit``, else ``BICORSEG_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`."""
    if limit is not None:
        return int(limit)
    text = os.environ.get(MAX_PIXELS_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(text)) if "e" in text.lower() else int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"{MAX_PIXELS_ENV} must be a positive number of pixels, got {text!r}")
    return value


def check_pixels(width: int, height: int, name: str | os.PathLike, limit: int | None = None) -> None:
    """Raise an :class:`InputError` when an image of ``width x height`` exceeds the pixel limit."""
    allowed = max_pixels(limit)
    if width * height > allowed:
        raise InputError(
            f"{name}: {width} x {height} pixels is more than the limit of {allowed} pixels for an image "
            f"read whole (set {MAX_PIXELS_ENV} to raise it)"
        )


def gdal_options(allow_remote: bool | None = None, path: str | os.PathLike = "") -> dict[str, str]:
    """The GDAL configuration options of the read of ``path`` (see the module docstring).

    The remote-read settings leave out any variable the user set in the environment.
    """
    options = {"GDAL_VRT_ENABLE_PYTHON": "NO"}
    if remote_allowed(allow_remote):
        tuning = {**REMOTE_OPTIONS, **(REMOTE_PATH_OPTIONS if is_remote(path) else {})}
        options.update({key: value for key, value in tuning.items() if key not in os.environ})
    else:
        options["CPL_VSIL_CURL_ALLOWED_EXTENSIONS"] = _NO_REMOTE_EXTENSION
    return options


def remote_refused(name: str, remote: str) -> InputError:
    """The one-line refusal of ``name``, which is or refers to the remote source ``remote``."""
    what = f"refers to the remote source {remote}" if remote != name else "is a remote source"
    return InputError(
        f"{name}: {what}; remote access is off (allow it with `allow_remote` or BICORSEG_ALLOW_REMOTE=1)"
    )


def _head(path: Path | None, data: bytes | None, size: int) -> bytes:
    if data is not None:
        return data[:size]
    try:
        with open(path, "rb") as stream:  # type: ignore[arg-type]
            return stream.read(size)
    except OSError:
        return b""  # GDAL reports unreadable files itself


def _vrt_sources(name: str, content: bytes, base: Path | None) -> list[str]:
    try:
        root = ElementTree.fromstring(content)
    except ElementTree.ParseError as error:
        raise InputError(f"{name}: not a readable VRT ({first_line(error)})") from error
    sources = []
    for element in root.iter():
        if element.tag != "SourceFilename" or not (element.text or "").strip():
            continue
        source = element.text.strip()
        if element.get("relativeToVRT", "0") == "1" and base is not None and not is_remote(source):
            source = str(base / source)
        sources.append(source)
    return sources


def _check_references(name: str, path: Path | None, data: bytes | None, depth: int = 0) -> None:
    """Refuse a local file whose content points GDAL at the network (VRT sources, service XML)."""
    head = _head(path, data, 1024)
    if _SERVICE_XML.search(head):
        raise InputError(
            f"{name}: describes a web service; remote access is off (allow it with `allow_remote` or BICORSEG_ALLOW_REMOTE=1)"
        )
    if not _VRT_XML.search(head):
        return
    if depth >= MAX_VRT_DEPTH:
        raise InputError(f"{name}: VRT files nested more than {MAX_VRT_DEPTH} deep")
    content = _head(path, data, MAX_VRT_BYTES + 1)
    if len(content) > MAX_VRT_BYTES:
        raise InputError(f"{name}: a VRT larger than {MAX_VRT_BYTES // 2**20} MiB is not inspected; refused")
    base = path.parent if path is not None else None
    for source in _vrt_sources(name, content, base):
        if is_remote(source):
            raise remote_refused(name, source)
        nested = Path(source)
        if nested.is_file():
            _check_references(name, nested, None, depth + 1)


@contextmanager
def open_raster(
    path: str | os.PathLike,
    *,
    data: bytes | None = None,
    allow_remote: bool | None = None,
    whole: bool = False,
    limit: int | None = None,
) -> Iterator[Any]:
    """Open an input raster for reading (a rasterio dataset), under the checks of the module docstring.

    Args:
        path: the file (or, with ``data``, the name used in messages); a :class:`VsiPath` (a URL
            or ``/vsi...`` path the user named) may be remote whatever ``allow_remote`` says.
        data: the file's bytes instead of the file (e.g. an archive member).
        allow_remote: allow remote sources; None: ``BICORSEG_ALLOW_REMOTE`` decides.
        whole: the caller reads the whole image at once: the pixel limit applies to any format
            (otherwise only to :data:`WHOLE_IMAGE_DRIVERS`).
        limit: the pixel limit (None: ``BICORSEG_MAX_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`).

    The GDAL options of :func:`gdal_options` stay in force until the block ends, so they also
    govern the reads. Unreadable files raise :class:`InputError` naming ``path``.
    """
    import rasterio  # here, not at import: the command line's help should not load GDAL
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    name = os.fspath(path)
    remote = remote_allowed(allow_remote) or (isinstance(path, VsiPath) and path.remote)
    if not remote:
        if data is None and is_remote(name):
            raise remote_refused(name, name)
        _check_references(name, Path(name) if data is None else None, data)
    with rasterio.Env(**gdal_options(remote, name)), warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        memory = None
        try:
            memory = rasterio.MemoryFile(data) if data is not None else None
            dataset = memory.open() if memory is not None else rasterio.open(name)
        except RasterioError as error:
            if memory is not None:
                memory.close()
            raise InputError(
                f"cannot read {path}: not an image or raster GDAL can open ({first_line(error)})"
            ) from error
        try:
            if not remote:
                if dataset.driver in NETWORK_DRIVERS:
                    raise InputError(
                        f"{name}: is read by GDAL's {dataset.driver} web-service driver; remote access is "
                        "off (allow it with `allow_remote` or BICORSEG_ALLOW_REMOTE=1)"
                    )
                for file in dataset.files:
                    if is_remote(file):
                        raise remote_refused(name, file)
            elif is_remote(name):  # a remote file may not make bicorseg read local ones (a VRT's sources)
                for file in dataset.files:
                    if not is_remote(file) and not file.startswith("/vsimem/"):
                        raise InputError(f"{path}: a remote dataset refers to the local file {file}; refused")
            if whole or dataset.driver in WHOLE_IMAGE_DRIVERS:
                check_pixels(dataset.width, dataset.height, name, limit)
            yield dataset
        finally:
            dataset.close()
            if memory is not None:
                memory.close()
