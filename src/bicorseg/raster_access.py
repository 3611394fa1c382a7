"""Opening input rasters and vector files safely: no network access unless asked, a limit on pixel counts.

Every input raster is opened by :func:`open_raster` (rasterio), every input vector file inside
:func:`vector_access` (pyogrio); the GDAL environment of those reads (both libraries bundle their
own GDAL) is set here, in one place. The rules, as users see them, are in ``docs/prediction.md``
(No network unless asked, Remote rasters); how they are enforced:

* **Offline** (the default): GDAL's network file systems open no file
  (``CPL_VSIL_CURL_ALLOWED_EXTENSIONS`` matches none) and every other HTTP request, of GDAL or of a
  library calling libcurl itself, goes to :data:`REFUSING_PROXY`, whose scheme libcurl refuses
  before it connects (:data:`OFFLINE_OPTIONS`, :data:`OFFLINE_ENVIRON`; ``no_proxy`` is set
  aside). A request GDAL tried anyway shows in its error messages: the read is refused in one line,
  also when the driver would go on without the data; :func:`check_no_network` lets a reader in
  windows stop at the first window that needed one. What is visible without GDAL is refused first,
  with a clearer message: remote paths and connection strings (:func:`is_remote`), VRTs whose
  sources are remote (through nested local VRTs), web-service descriptions, a GeoJSON CRS link;
  after opening, a web-service or database driver (:data:`NETWORK_DRIVERS`) or a remote file in
  the dataset's file list.
* **Asking**: ``allow_remote=True`` or ``BICORSEG_ALLOW_REMOTE=1`` (``--allow-remote``) for every
  input, or naming the input: :func:`input_path` makes a :class:`VsiPath` of a URL or ``/vsi...``
  path the user typed, which alone may then reach the network. Remote reads are ranged, merged,
  retried and cached (:data:`REMOTE_OPTIONS`, :data:`REMOTE_PATH_OPTIONS`; a variable set in the
  environment wins); a remote dataset may not refer to local files.
* **VRT Python code never runs** (``GDAL_VRT_ENABLE_PYTHON=NO``).
* **One image per input**: a file of several images (TIFF pages, subdatasets) is refused in one
  line; a page is named as GDAL names it (``GTIFF_DIR:2:/data/x.tif``, written as ``x_page2.tif``).
* **Pixel limit**: an image read whole (the plain picture formats of :data:`WHOLE_IMAGE_DRIVERS`,
  ``whole=True``) may declare at most :data:`DEFAULT_MAX_PIXELS` pixels (``BICORSEG_MAX_PIXELS``
  or ``max_pixels=`` sets another), checked from the header before anything is decoded.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import warnings
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
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
# drivers that reach a server themselves: web services (raster and vector) and databases
NETWORK_DRIVERS = frozenset(
    {
        "WMS", "WMTS", "WCS", "EEDA", "EEDAI", "PLMOSAIC", "DAAS", "NGW", "OGCAPI", "STACIT", "STACTA",
        "HTTP", "WFS", "CSW", "OAPIF", "Carto", "AmigoCloud", "Elasticsearch", "PLSCENES", "ADBC",
        "PostgreSQL", "PostGISRaster", "MySQL", "ODBC", "MSSQLSpatial", "MongoDBv3", "HANA", "OCI",
    }
)  # fmt: skip
# connection-string prefixes of those drivers (``WMS:http://...``, ``PG:host=...``)
_CONNECTION_PREFIXES = (*NETWORK_DRIVERS, "WFS3", "PG", "PGRASTER", "MSSQL", "ES")
# also GDAL's option form, /vsicurl?url=...
_NETWORK_VSI = re.compile(r"/vsi(curl|s3|gs|az|adls|oss|swift|webhdfs|hdfs)(_streaming)?[/?]", re.IGNORECASE)
_URL = re.compile(r"\b([a-z][a-z0-9+.-]*)://", re.IGNORECASE)
# libcurl also reads ``http:/host/x`` (one slash) as a URL
_CURL_SPELLING = re.compile(r"\b(https?|ftps?):/(?!/)", re.IGNORECASE)
_CONNECTION = re.compile(r"^(" + "|".join(sorted(_CONNECTION_PREFIXES)) + r"):", re.IGNORECASE)
# looked for in a file's first KiB, as GDAL identifies these formats by content (whatever the name)
_SERVICE_XML = re.compile(rb"<\s*(GDAL_WMS|GDAL_WMTS|WCS_GDAL|GDAL_WCS)\b")
_VRT_XML = re.compile(rb"<\s*(VRTDataset|OGRVRTDataSource)\b")
# elements of raster and OGR VRTs that name another dataset
_SOURCE_TAGS = frozenset({"SourceFilename", "SrcDataSource"})
# a JSON file is decoded whole up to this size to find a GeoJSON "crs" member (the 2008 form), whatever
# the spelling of its text; a larger one, or one Python cannot decode, is searched in its first and last MiB
GEOJSON_PARSE_BYTES = 16 * 2**20
JSON_SCAN_BYTES = 2**20
_JSON_CRS = re.compile(rb'"crs"\s*:\s*\{')
_JSON_HREF = re.compile(rb'"href"\s*:\s*"([^"]*)"')
# a local VRT is read whole to find its sources; larger ones are refused rather than parsed
MAX_VRT_BYTES = 64 * 2**20
MAX_VRT_DEPTH = 8
ALLOW_REMOTE_HELP = (
    "let inputs read remote sources (/vsicurl/, /vsis3/, URLs, web services), also through local VRT "
    "files that refer to them; off by default, so that no input reaches the network unasked"
)
# while remote access is off, every HTTP request goes to this proxy: libcurl refuses its scheme
# before it resolves or connects anything, and GDAL's error messages then name it
REFUSING_PROXY = "bicorseg-remote-access-is-off://refused"
# and GDAL's network file systems open no file: they refuse before libcurl is asked, so the refusal
# is not cached as a missing file (which would fail a later read that is allowed)
_NO_REMOTE_EXTENSION = ".bicorseg-remote-access-is-off"
OFFLINE_OPTIONS = {
    "GDAL_HTTP_PROXY": REFUSING_PROXY,
    "GDAL_HTTPS_PROXY": REFUSING_PROXY,
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": _NO_REMOTE_EXTENSION,
}
# the process environment meanwhile (None: unset): libcurl's own proxy variables (read by any library
# that calls libcurl without a proxy of its own, such as netCDF's OPeNDAP client, and by GDAL threads
# that do not see the options above), and no host exempted by no_proxy
OFFLINE_ENVIRON: dict[str, str | None] = {
    "http_proxy": REFUSING_PROXY,
    "https_proxy": REFUSING_PROXY,
    "all_proxy": REFUSING_PROXY,
    "HTTPS_PROXY": REFUSING_PROXY,
    "ALL_PROXY": REFUSING_PROXY,
    "no_proxy": None,
    "NO_PROXY": None,
}
# URL schemes of remote inputs and the GDAL virtual file system that reads each
URL_FILE_SYSTEMS = {
    "https": "/vsicurl/",
    "http": "/vsicurl/",
    "s3": "/vsis3/",
    "gs": "/vsigs/",
    "az": "/vsiaz/",
}
# one page of a multi-page TIFF, as GDAL names it (GTIFF_DIR:2:/data/x.tif)
_TIFF_PAGE = re.compile(r"^GTIFF_DIR:(\d+):(.+)$", re.IGNORECASE)
_INNER_URL = re.compile(r"[a-z][a-z0-9+.-]*://(?!.*://).*$", re.IGNORECASE)
# while remote access is allowed: ranged reads, merged and several per request, retried
REMOTE_OPTIONS = {
    "GDAL_HTTP_MULTIRANGE": "YES",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MAX_RETRY": "4",  # on HTTP 429, 500, 502, 503, 504 and dropped connections
    "GDAL_HTTP_RETRY_DELAY": "1",  # seconds, doubled at each retry
    "CPL_VSIL_CURL_CACHE_SIZE": str(128 * 2**20),  # blocks downloaded, all files (GDAL's default: 16 MiB)
}
# for a remote path itself: no folder listing (no sidecar files are looked for), a per-file cache
REMOTE_PATH_OPTIONS = {
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "VSI_CACHE": "TRUE",
    "VSI_CACHE_SIZE": str(64 * 2**20),  # GDAL's default: 25 MB
}
# GDAL's block cache in bytes for reads in windows (rasterio passes the number as bytes): GDAL's
# default, 5 % of the RAM, would fill up with blocks of a large raster and make the memory grow with its size
GDAL_CACHE_BYTES = 32 * 2**20

REMOTE_HINT = "remote access is off (allow it with `allow_remote` or BICORSEG_ALLOW_REMOTE=1)"


@dataclass(frozen=True)
class VsiPath:
    """An input named by a URL or a GDAL virtual file system path (see :func:`input_path`).

    ``given`` is the name as the user wrote it (used in messages), ``gdal`` what GDAL opens
    (``os.fspath`` gives it). ``granted``: the user asked for this input's remote reads although
    ``gdal`` is a local file (the VRT of a STAC item they named). ``name``, ``stem`` and ``suffix``
    are those of the last component of the path, without a URL's query string, so
    ``https://h/a/scene.tif?sig=x`` writes ``scene.tif``. The few :class:`~pathlib.Path` methods
    the predictor asks an input for answer as for a file that is not on the local disk (``stat``
    raises ``FileNotFoundError``).
    """

    given: str
    gdal: str
    granted: bool = False

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
        page = _TIFF_PAGE.match(text)
        if page is not None:  # GTIFF_DIR:2:/data/x.tif -> x_page2.tif: each page its own outputs
            file = PurePath(page.group(2))
            return f"{file.stem}_page{page.group(1)}{file.suffix}"
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


InputPath = Path | VsiPath  # an input as :func:`input_path` makes it, once, where it enters


def input_path(name: str | os.PathLike) -> InputPath:
    """What a user named as an input: a :class:`VsiPath` for a URL, a ``/vsi...`` name or a TIFF page
    (``GTIFF_DIR:N:path``), else a Path (``file://`` URLs and anything without a scheme).

    A URL of another scheme raises an :class:`InputError` naming the schemes that are read.
    """
    if isinstance(name, VsiPath):
        return name
    if isinstance(name, PurePath):  # a Path has already folded the "//" of a URL: it is local
        return Path(name)
    text = os.fspath(name)
    match = _URL.match(text)
    if text.startswith("/vsi") or _TIFF_PAGE.match(text):
        path = VsiPath(text, text)
    elif match is None:
        return Path(text)
    elif match.group(1).lower() == "file":
        return Path(unquote(urlsplit(text).path))
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


def remote_allowed(allow_remote: bool | None = None) -> bool:
    """``allow_remote`` when given, else whether ``BICORSEG_ALLOW_REMOTE`` is set to 1/true/yes."""
    if allow_remote is not None:
        return bool(allow_remote)
    return os.environ.get(ALLOW_REMOTE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


@contextmanager
def remote_access(allow: bool) -> Iterator[None]:
    """Within the block, every input may read remote sources when ``allow`` (also in child processes)."""
    previous = _set_environ({ALLOW_REMOTE_ENV: "1" if allow else os.environ.get(ALLOW_REMOTE_ENV)})
    try:
        yield
    finally:
        _set_environ(previous)


def _set_environ(values: dict[str, str | None]) -> dict[str, str | None]:
    """Set (None: unset) the variables of ``values`` in the process environment; returns what they were."""
    previous = {key: os.environ.get(key) for key in values}
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return previous


def is_remote(name: str | os.PathLike) -> bool:
    """True when ``name`` visibly points GDAL at the network (network /vsi path, URL, connection string).

    A spelling this misses still cannot reach the network while remote access is off (see the
    module docstring); this only gives the clearer message before GDAL is asked.
    """
    text = os.fspath(name)
    if _NETWORK_VSI.search(text) or _CONNECTION.match(text) or _CURL_SPELLING.search(text):
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


# --- the GDAL environment ------------------------------------------------------------------------


def gdal_options(allow_remote: bool | None = None, path: str | os.PathLike = "") -> dict[str, str]:
    """The GDAL configuration options of the read of ``path`` (see the module docstring).

    The remote-read settings leave out any variable the user set in the environment; the
    offline ones (:data:`OFFLINE_OPTIONS`) replace the user's.
    """
    options = {"GDAL_VRT_ENABLE_PYTHON": "NO"}
    if remote_allowed(allow_remote):
        tuning = {**REMOTE_OPTIONS, **(REMOTE_PATH_OPTIONS if is_remote(path) else {})}
        options.update({key: value for key, value in tuning.items() if key not in os.environ})
    else:
        options.update(OFFLINE_OPTIONS)
    return options


class _RefusedRequests(logging.Filter):
    """Notes the GDAL errors that name :data:`REFUSING_PROXY` (rasterio logs every GDAL error).

    Installed on rasterio's error logger while some offline read is open; the logger is then
    enabled down to INFO (where rasterio logs GDAL's failures) and records below the level it had
    before are dropped here, so nothing else is logged than without it. A refusal is noted for
    every offline read open in the process: GDAL may report it from a worker thread of its own.
    """

    def __init__(self, floor: int) -> None:
        super().__init__()
        self.floor = floor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _refusal_in(message):
            with _offline_lock:
                for seen in _open_reads:
                    seen.append(first_line(message))
        return record.levelno >= self.floor


_offline_lock = threading.Lock()
_open_reads: list[list[str]] = []  # the refused requests noted for each offline read open in the process
_saved: dict[str, Any] = {}  # what the first open offline read changed, put back by the last
_offline = threading.local()  # .stack: this thread's offline reads, innermost last
_RASTERIO_ERRORS = "rasterio._err"


@contextmanager
def _offline_reads(active: bool = True) -> Iterator[list[str]]:
    """Within the block, GDAL's requests are refused (unless not ``active``); yields the list of those it
    tried (error lines). The process-wide parts (environment, log filter) are installed by the first
    offline read open in the process and removed by the last."""
    seen: list[str] = []
    if not active:
        yield seen
        return
    logger = logging.getLogger(_RASTERIO_ERRORS)
    with _offline_lock:
        if not _open_reads:
            refused = _RefusedRequests(logger.getEffectiveLevel())
            _saved.update(environ=_set_environ(OFFLINE_ENVIRON), filter=refused, level=logger.level)
            logger.addFilter(refused)
            logger.setLevel(min(logging.INFO, logger.getEffectiveLevel()))
        _open_reads.append(seen)
    stack = _offline.__dict__.setdefault("stack", [])
    stack.append(seen)
    try:
        yield seen
    finally:
        stack.pop()
        with _offline_lock:
            _open_reads[:] = [other for other in _open_reads if other is not seen]
            if not _open_reads:
                _set_environ(_saved.pop("environ"))
                logger.removeFilter(_saved.pop("filter"))
                logger.setLevel(_saved.pop("level"))


def network_refused(name: str | os.PathLike) -> InputError:
    """The one-line refusal of ``name``, whose reading made GDAL try to reach the network."""
    return InputError(
        f"{name}: reading it needs the network (a source, tile, link or service it refers to); {REMOTE_HINT}"
    )


def check_no_network(name: str | os.PathLike) -> None:
    """Raise :func:`network_refused` when a read of the innermost open offline input tried the network.

    For readers that read in windows: called after each window, the refusal comes before a result
    is made of data GDAL could not fetch.
    """
    stack = getattr(_offline, "stack", None)
    if stack and stack[-1]:
        raise network_refused(name)


def _refusal_in(error: BaseException | str) -> bool:
    """Whether a GDAL error shows a refused request: the proxy named, or a network path not opened."""
    text = str(error)
    return REFUSING_PROXY in text or _NETWORK_VSI.search(text) is not None


@contextmanager
def vector_environment(allow_remote: bool | None = None, path: str | os.PathLike = "") -> Iterator[None]:
    """GDAL's environment for pyogrio's reads within the block (see the module docstring).

    Offline unless ``allow_remote`` (None: ``BICORSEG_ALLOW_REMOTE``); the options are set in
    pyogrio's GDAL (globally there: it has no thread-local options) and put back after.
    :func:`vector_access` adds the checks of a file; a reader of several layers of a local file can
    use this alone.
    """
    import pyogrio

    remote = remote_allowed(allow_remote)
    options = gdal_options(remote, path)
    previous = {key: pyogrio.get_gdal_config_option(key) for key in options}
    with _offline_reads(not remote):
        pyogrio.set_gdal_config_options(options)
        try:
            yield
        finally:
            pyogrio.set_gdal_config_options(
                {key: None if value == os.environ.get(key) else value for key, value in previous.items()}
            )


# --- checks before GDAL opens a file --------------------------------------------------------------


def remote_refused(name: str, remote: str) -> InputError:
    """The one-line refusal of ``name``, which is or refers to the remote source ``remote``."""
    shown = remote if len(remote) <= 160 else remote[:150] + "..."  # a service description is long
    what = (
        f"refers to the remote source {' '.join(shown.split())}" if remote != name else "is a remote source"
    )
    return InputError(f"{name}: {what}; {REMOTE_HINT}")


def _head(path: Path, size: int) -> bytes:
    try:
        with open(path, "rb") as stream:
            return stream.read(size)
    except OSError:
        return b""  # GDAL reports unreadable files itself


def geojson_crs(path: Path) -> dict[str, Any] | None:
    """The top-level ``crs`` member of a GeoJSON file (the 2008 form; RFC 7946 has none), None without;
    found by a search of the file's ends, a member is ``{}`` or a link to the ``href``."""
    try:
        if path.stat().st_size > GEOJSON_PARSE_BYTES:
            with open(path, "rb") as stream:
                ends = [stream.read(JSON_SCAN_BYTES)]
                stream.seek(max(stream.seek(0, os.SEEK_END) - JSON_SCAN_BYTES, 0))
                ends.append(stream.read())
        else:
            data = path.read_bytes()
            ends = [data[:JSON_SCAN_BYTES], data[-JSON_SCAN_BYTES:]]
            with suppress(ValueError, RecursionError):  # not JSON to Python: searched as text below
                parsed = json.loads(data)
                member = parsed.get("crs") if isinstance(parsed, dict) else None
                return member if member is None or isinstance(member, dict) else {}
    except OSError:
        return None  # GDAL reports unreadable files itself
    found = None
    for text in ends:
        for member in _JSON_CRS.finditer(text):
            href = _JSON_HREF.search(text, member.end(), member.end() + 2048)
            if href is not None:
                return {"properties": {"href": href.group(1).decode("utf-8", "replace")}}
            found = {}
    return found


def _check_references(name: str, path: Path, depth: int = 0) -> None:
    """Refuse a local file whose content visibly points GDAL at the network (VRT sources, service
    XML, a GeoJSON CRS given by a link)."""
    head = _head(path, 1024)
    if _SERVICE_XML.search(head):
        raise InputError(f"{name}: describes a web service; {REMOTE_HINT}")
    if head.lstrip()[:1] == b"{":
        properties = (geojson_crs(path) or {}).get("properties")
        link = properties.get("href") if isinstance(properties, dict) else None
        if isinstance(link, str) and is_remote(link):
            raise InputError(f"{name}: its CRS is a link to {link}, which needs the network; {REMOTE_HINT}")
    if not _VRT_XML.search(head):
        return
    if depth >= MAX_VRT_DEPTH:
        raise InputError(f"{name}: VRT files nested more than {MAX_VRT_DEPTH} deep")
    content = _head(path, MAX_VRT_BYTES + 1)
    if len(content) > MAX_VRT_BYTES:
        raise InputError(f"{name}: a VRT larger than {MAX_VRT_BYTES // 2**20} MiB is not inspected; refused")
    try:
        root = ElementTree.fromstring(content)
    except ElementTree.ParseError as error:
        raise InputError(f"{name}: not a readable VRT ({first_line(error)})") from error
    for element in root.iter():
        source = (element.text or "").strip()
        if element.tag not in _SOURCE_TAGS or not source:
            continue
        relative = element.get("relativeToVRT", element.get("relativetoVRT", "0")) == "1"
        if relative and not is_remote(source):
            source = str(path.parent / source)
        if is_remote(source) or _SERVICE_XML.search(source.encode("utf-8", "replace")):
            raise remote_refused(name, source)
        nested = Path(source)
        if nested.is_file():
            _check_references(name, nested, depth + 1)


def _may_reach_network(path: str | os.PathLike, allow_remote: bool | None) -> bool:
    """Whether reading ``path`` may reach the network; when not, the checks before GDAL opens it."""
    name, shown = os.fspath(path), str(path)
    if remote_allowed(allow_remote) or (isinstance(path, VsiPath) and (path.granted or path.remote)):
        return True
    if is_remote(name):
        raise remote_refused(shown, name)
    _check_references(shown, Path(name))
    return False


def _check_opened(name: str, driver: str, files: list[str]) -> None:
    """Refuse, after an offline open, a web-service or database driver and a remote file in the list."""
    if driver in NETWORK_DRIVERS:
        raise InputError(f"{name}: is read by GDAL's {driver} driver, which reaches a server; {REMOTE_HINT}")
    for file in files:
        if is_remote(file):
            raise remote_refused(name, file)


# --- rasters -----------------------------------------------------------------------------------------


@contextmanager
def open_raster(
    path: str | os.PathLike,
    *,
    allow_remote: bool | None = None,
    whole: bool = False,
    limit: int | None = None,
) -> Iterator[Any]:
    """Open an input raster for reading (a rasterio dataset), under the checks of the module docstring.

    Args:
        path: the file; a :class:`VsiPath` (a URL or ``/vsi...`` path the user named, or a
            granted file) may reach the network whatever ``allow_remote`` says.
        allow_remote: allow remote sources; None: ``BICORSEG_ALLOW_REMOTE`` decides.
        whole: the caller reads the whole image at once: the pixel limit applies to any format
            (otherwise only to :data:`WHOLE_IMAGE_DRIVERS`).
        limit: the pixel limit (None: ``BICORSEG_MAX_PIXELS`` or :data:`DEFAULT_MAX_PIXELS`).

    The GDAL environment stays in force until the block ends, so it also governs the reads; an
    offline read that made GDAL try the network is refused when the block ends (and at the next
    :func:`check_no_network`). Unreadable files raise :class:`InputError` naming ``path``.
    """
    import rasterio  # here, not at import: the command line's help should not load GDAL
    from rasterio.errors import NotGeoreferencedWarning, RasterioError

    name, shown = os.fspath(path), str(path)
    if isinstance(path, Path) and not path.exists():
        raise InputError(f"input not found: {shown}")
    remote = _may_reach_network(path, allow_remote)
    with ExitStack() as stack:
        refused = stack.enter_context(_offline_reads(not remote))
        stack.enter_context(rasterio.Env(**gdal_options(remote, name)))
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            dataset = stack.enter_context(rasterio.open(name))
        except RasterioError as error:
            if not remote and (refused or _refusal_in(error)):
                raise network_refused(shown) from None  # the reason, not GDAL's symptom
            raise InputError(
                f"cannot read {shown}: not an image or raster GDAL can open ({first_line(error)})"
            ) from error
        if not remote:
            check_no_network(shown)
            _check_opened(shown, dataset.driver, dataset.files)
        elif is_remote(name):  # a remote file may not make bicorseg read local ones (a VRT's sources)
            for file in dataset.files:
                if not is_remote(file) and not file.startswith("/vsimem/"):
                    raise InputError(f"{shown}: a remote dataset refers to the local file {file}; refused")
        # several images (pages of a TIFF, subdatasets of netCDF, HDF, GeoPackage): GDAL would read
        # the first alone, without a word; the line says how to name the image to read
        images = list(dataset.subdatasets)
        if len(images) > 1 or (images and dataset.count == 0):
            raise InputError(
                f"{shown}: holds {len(images)} images (pages or subdatasets) and only one can be read: "
                f"name it as GDAL does, e.g. {images[1] if len(images) > 1 else images[0]}"
            )
        if whole or dataset.driver in WHOLE_IMAGE_DRIVERS:
            check_pixels(dataset.width, dataset.height, shown, limit)
        try:
            yield dataset
        except Exception as error:  # what a failed read needed is said first: the network
            if not remote and (refused or _refusal_in(error)):
                raise network_refused(shown) from None  # the reason, not GDAL's symptom
            raise
        if not remote:
            check_no_network(shown)


@contextmanager
def reading(path: str | os.PathLike) -> Iterator[None]:
    """Reads of ``path`` in the block: a GDAL error becomes the one line ``cannot read <path>: ...``."""
    from rasterio.errors import RasterioError

    try:
        yield
    except RasterioError as error:
        raise InputError(f"cannot read {path}: {first_line(error)}") from error


def reads_dataset_mask(src: Any, alpha: bool = False) -> bool:
    """Whether GDAL's dataset mask is the mask of ``src`` (``alpha``: its last band is a real alpha band).

    GDAL takes the dataset mask from an alpha band when there is one (it marks the 4th band of a
    4-band byte GeoTIFF as alpha by default): only a real alpha band may mask pixels; with any
    other, the nodata value of the bands read is the mask.
    """
    import rasterio

    flags = rasterio.enums.MaskFlags.alpha
    return alpha or not any(flags in src.mask_flag_enums[b - 1] for b in range(1, src.count + 1))


def declared_valid(src: Any, window: Any, data: Any, dataset_mask: bool) -> Any:
    """Pixels of ``window`` valid by the raster's own mask (nodata value, real alpha band, internal mask).

    ``data`` holds the bands read there; ``dataset_mask`` comes from :func:`reads_dataset_mask`.
    """
    import numpy as np

    if dataset_mask:
        return src.dataset_mask(window=window) > 0
    nodata = src.nodata
    if nodata is None or np.isnan(nodata):
        return np.ones(data.shape[1:], bool)
    return (data != nodata).any(axis=0)  # GDAL's rule: nodata where every band is nodata


# files listed for one input (a VRT of many tiles), beyond which the rest is not listed
MAX_INPUT_FILES = 10_000


def input_files(path: str | os.PathLike) -> tuple[Path, ...]:
    """The local files GDAL reads for the input ``path``: the file, its sidecars, and the sources of a
    VRT (followed through nested VRTs, :data:`MAX_VRT_DEPTH` deep), resolved; for the checks that no
    output replaces an input. Empty for a remote input, or one that cannot be opened (reading it
    reports that).
    """
    import rasterio
    from rasterio.errors import RasterioError

    if isinstance(path, VsiPath) and path.remote:
        return ()
    found: dict[Path, None] = {}
    try:
        with open_raster(path) as src:
            pending = [(file, 0) for file in src.files]
            while pending and len(found) < MAX_INPUT_FILES:
                file, depth = pending.pop(0)
                if is_remote(file) or file.startswith("/vsi"):
                    continue
                local = Path(file).resolve()
                if local in found:
                    continue
                found[local] = None
                if depth < MAX_VRT_DEPTH and local != Path(os.fspath(path)).resolve():
                    if _VRT_XML.search(_head(local, 1024)):
                        with suppress(RasterioError), rasterio.open(local) as nested:
                            pending.extend((f, depth + 1) for f in nested.files)
    except InputError:
        return ()
    return tuple(found)


# --- vector files --------------------------------------------------------------------------------


@contextmanager
def vector_access(path: str | os.PathLike, *, allow_remote: bool | None = None) -> Iterator[str]:
    """Read a vector file with pyogrio within the block (the caller's pyogrio calls go inside it):
    yields the name to give pyogrio. The checks of :func:`open_raster` apply; an error or warning
    of those calls that shows a refused request (a CRS link, a remote XML schema) becomes the
    one-line refusal naming the file.
    """
    import pyogrio

    name, shown = os.fspath(path), str(path)
    remote = _may_reach_network(path, allow_remote)
    with vector_environment(remote, name):
        if remote:
            yield name
            return
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                info = pyogrio.read_info(name, layer=0)  # the driver: any layer tells it, without a warning
                _check_opened(shown, info.get("driver") or "", [])
                yield name
            except Exception as error:
                if _refusal_in(error):
                    raise network_refused(shown) from None  # the reason, not GDAL's symptom
                raise
        if any(_refusal_in(str(w.message)) for w in caught):
            raise network_refused(shown)
        for warning in caught:  # the others, as they would have been shown
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
