"""STAC items in and out: a checkpoint's bands picked from an item's assets, and a STAC Item per output.

Optional extra ``cloud`` (``pystac``). The rules, as users see them, are in ``docs/prediction.md``
(STAC items). **In** (:func:`stac_input`): an item (a local file or an ``http(s)://`` URL, at most
:data:`MAX_ITEM_BYTES`) is read, its assets chosen for the checkpoint's bands (:func:`select_bands`)
and stacked into a VRT (:func:`build_vrt`); an item given as a URL grants remote reads to its own
VRT alone (a granted :class:`~bicorseg.raster_access.VsiPath`), and every asset stacked is an input
of the run (a source of the VRT), which no output may replace. **Out** (:func:`write_output_item`):
``<stem>_item.json`` beside a class raster.
"""

from __future__ import annotations

import json
import os
import re
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import numpy as np
import rasterio
from rasterio.warp import transform as transform_points

from bicorseg.atomic import write_text_atomic
from bicorseg.defaults import NODATA, default_class_name, default_class_names
from bicorseg.errors import ConfigError, InputError, first_line, require_extra
from bicorseg.gis.source import CLASSES_TAG, ClassRaster
from bicorseg.raster_access import (
    VsiPath,
    input_path,
    is_remote,
    open_raster,
    remote_allowed,
    remote_refused,
)

MAX_ITEM_BYTES = 16 * 2**20
ITEM_SUFFIX = "_item.json"
SKIPPED_ROLES = frozenset({"thumbnail", "overview", "metadata"})
RASTER_MEDIA = ("image/tiff", "image/jp2", "image/vnd.stac.geotiff", "application/x-geotiff")
EDGE_POINTS = 16  # points per edge of the footprint polygon reprojected to EPSG:4326


def require_cloud() -> Any:
    """``pystac``, or a one-line :class:`ConfigError` saying which extra to install."""
    return require_extra("cloud", ("pystac",), "STAC")[0]


# --- reading an item ---------------------------------------------------------------------------


def _is_url(text: str) -> bool:
    return re.match(r"^https?://", text, re.IGNORECASE) is not None


def read_item(href: str | os.PathLike) -> Any:
    """A ``pystac.Item`` from a local file or an http(s) URL (at most :data:`MAX_ITEM_BYTES`)."""
    pystac = require_cloud()
    text = os.fspath(href)
    try:
        if _is_url(text):
            # the user named this URL; a fresh opener reads the proxy settings of the environment now
            # (urlopen's shared opener keeps those of its first use in the process, e.g. torch.hub's)
            with urllib.request.build_opener().open(text, timeout=60) as response:
                raw = response.read(MAX_ITEM_BYTES + 1)
            location = text
        else:
            path = Path(text)
            if not path.is_file():
                raise InputError(f"STAC item not found: {path}")
            with open(path, "rb") as stream:
                raw = stream.read(MAX_ITEM_BYTES + 1)
            location = str(path.resolve())
    except OSError as error:
        raise InputError(f"cannot read the STAC item {text}: {first_line(error)}") from error
    if len(raw) > MAX_ITEM_BYTES:
        raise InputError(f"{text}: a STAC item larger than {MAX_ITEM_BYTES // 2**20} MiB is refused")
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise InputError(f"{text}: not a JSON STAC item ({first_line(error)})") from error
    if (
        not isinstance(data, dict)
        or data.get("type") != "Feature"
        or not isinstance(data.get("assets"), dict)
    ):
        raise InputError(f"{text}: not a STAC Item (a GeoJSON Feature with assets)")
    try:
        return pystac.Item.from_dict(data, href=location, preserve_dict=False)
    except Exception as error:  # pystac raises several types for malformed items
        raise InputError(f"{text}: not a valid STAC Item ({first_line(error)})") from error


@dataclass(frozen=True)
class BandSource:
    """One band of the stack: band ``band`` (from 1) of the asset ``asset`` at ``href``."""

    asset: str
    href: str  # absolute: a local path or a URL
    band: int
    name: str


def _asset_bands(asset: Any) -> list[dict]:
    data = asset.to_dict()
    bands = data.get("eo:bands") or data.get("bands") or []
    return [b for b in bands if isinstance(b, dict)] if isinstance(bands, list) else []


def _is_data_asset(asset: Any) -> bool:
    roles = {str(r).lower() for r in (asset.roles or [])}
    if roles and roles <= SKIPPED_ROLES:
        return False
    media = (asset.media_type or "").lower()
    return not media or media.startswith(RASTER_MEDIA)


def _answers(asset_key: str, asset: Any, name: str) -> list[int]:
    """Band numbers (from 1) of ``asset`` that answer the band ``name``."""
    wanted = name.strip().lower()
    bands = _asset_bands(asset)
    if not bands:
        labels = {asset_key.lower(), *(str(r).lower() for r in (asset.roles or []))}
        return [1] if wanted in labels else []
    found = []
    for number, band in enumerate(bands, start=1):
        labels = {str(band.get(k, "")).strip().lower() for k in ("common_name", "eo:common_name", "name")}
        if wanted in labels:
            found.append(number)
    return found


def select_bands(
    item: Any, bands: Sequence[str] | None, channels: int, assets: Sequence[str] | None = None
) -> list[BandSource]:
    """The asset band for each of the checkpoint's ``bands`` by the rule of ``docs/prediction.md`` (STAC items)."""
    where = item.get_self_href() or item.id
    chosen = {key: a for key, a in item.assets.items() if _is_data_asset(a)}
    if assets:
        missing = [k for k in assets if k not in item.assets]
        if missing:
            raise ConfigError(
                f"{where} has no asset {missing[0]!r} (assets: {', '.join(item.assets)})", key="assets"
            )
        chosen = {k: item.assets[k] for k in assets}

    def source(key: str, band: int, name: str) -> BandSource:
        return BandSource(key, chosen[key].get_absolute_href() or chosen[key].href, band, name)

    if not bands:
        if not assets:
            raise ConfigError(
                f"the checkpoint names no bands, so the assets of {where} cannot be matched: "
                "name them with `assets`"
            )
        stack = []
        for key in assets:
            count = max(1, len(_asset_bands(chosen[key])))
            stack.extend(source(key, b, f"{key}:{b}") for b in range(1, count + 1))
        if len(stack) != channels:
            raise ConfigError(
                f"{', '.join(assets)} of {where} hold {len(stack)} band(s), the checkpoint takes {channels}",
                key="assets",
            )
        return stack
    matches = {name: {k: _answers(k, a, name) for k, a in chosen.items()} for name in bands}
    matches = {name: {k: v for k, v in m.items() if v} for name, m in matches.items()}
    for name, found in matches.items():
        if not found:
            raise InputError(
                f"{where}: no asset holds the band {name!r} the checkpoint takes (bands {', '.join(bands)}; "
                f"data assets: {', '.join(chosen) or 'none'})"
            )
    whole = [k for k in chosen if all(k in matches[name] for name in bands)]
    if len(whole) == 1:
        return [source(whole[0], matches[name][whole[0]][0], name) for name in bands]
    if len(whole) > 1:
        raise InputError(
            f"{where}: the assets {', '.join(whole)} each hold the bands {', '.join(bands)}: choose one "
            "with `assets`"
        )
    stack = []
    for name in bands:
        found = matches[name]
        if len(found) > 1 or len(next(iter(found.values()))) > 1:
            options = ", ".join(f"{k} (band {', '.join(map(str, v))})" for k, v in found.items())
            raise InputError(f"{where}: the band {name!r} is in {options}: choose the assets with `assets`")
        key, numbers = next(iter(found.items()))
        stack.append(source(key, numbers[0], name))
    return stack


# --- the VRT -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class StacInput:
    """An item prepared for prediction: ``vrt`` is read as the raster named ``<item id>.vrt``."""

    item_href: str
    vrt: Path
    datetime: str | None
    remote: bool  # some band is read over the network
    given: str  # the item as the user named it

    @property
    def input(self) -> VsiPath:
        """What ``predict`` reads: the VRT, named as the item in messages, its remote reads granted
        when the user asked for them by naming a remote item (or by ``BICORSEG_ALLOW_REMOTE``)."""
        return VsiPath(self.given, str(self.vrt), granted=self.remote)


def safe_name(text: str) -> str:
    """A file name stem from an item id (characters other than letters, digits, ``.-_`` become ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "item"


def _gdal_name(href: str) -> str:
    path = input_path(href)
    return os.fspath(path) if not isinstance(path, Path) else str(path.resolve())


def build_vrt(sources: Sequence[BandSource], target: Path, where: str) -> None:
    """Write a VRT stacking ``sources`` (one VRT band each) to ``target``."""
    info: dict[str, dict] = {}
    for band in sources:
        if band.href in info:
            continue
        with open_raster(input_path(band.href)) as src:
            info[band.href] = {
                "crs": src.crs,
                "transform": src.transform,
                "bounds": tuple(src.bounds),
                "shape": (src.height, src.width),
                "dtypes": src.dtypes,
                "nodata": src.nodatavals,
                "count": src.count,
                "blocks": src.block_shapes,
            }
        meta = info[band.href]
        if band.band > meta["count"]:
            raise InputError(f"{where}: asset {band.asset} ({band.href}) has no band {band.band}")
        if meta["crs"] is None or meta["transform"].is_identity:
            raise InputError(f"{where}: asset {band.asset} ({band.href}) is not georeferenced")
    first = info[sources[0].href]
    finest = min(info.values(), key=lambda m: abs(m["transform"].a))
    coarsest = max(abs(m["transform"].a) for m in info.values())
    for band in sources:
        meta = info[band.href]
        if meta["crs"] != first["crs"]:
            raise InputError(f"{where}: assets {sources[0].asset} and {band.asset} have different CRSs")
        if meta["dtypes"][band.band - 1] != first["dtypes"][sources[0].band - 1]:
            raise InputError(
                f"{where}: assets {sources[0].asset} and {band.asset} have different data types "
                f"({first['dtypes'][sources[0].band - 1]}, {meta['dtypes'][band.band - 1]})"
            )
        if max(abs(a - b) for a, b in zip(meta["bounds"], finest["bounds"])) > coarsest / 2:
            raise InputError(f"{where}: assets {sources[0].asset} and {band.asset} cover different areas")
    height, width = finest["shape"]
    t = finest["transform"]
    dtype = first["dtypes"][sources[0].band - 1]
    gdal_type = rasterio.dtypes.typename_fwd[rasterio.dtypes.dtype_rev[dtype]]  # uint8 -> Byte
    lines = [
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
        f'  <SRS dataAxisToSRSAxisMapping="1,2">{escape(first["crs"].to_wkt())}</SRS>',
        f"  <GeoTransform>{t.c!r}, {t.a!r}, {t.b!r}, {t.f!r}, {t.d!r}, {t.e!r}</GeoTransform>",
    ]
    for number, band in enumerate(sources, start=1):
        meta = info[band.href]
        h, w = meta["shape"]
        by, bx = meta["blocks"][band.band - 1]
        nodata = meta["nodata"][band.band - 1]
        lines.append(f'  <VRTRasterBand dataType="{gdal_type}" band="{number}">')
        lines.append(f"    <Description>{escape(band.name)}</Description>")
        if nodata is not None:
            lines.append(f"    <NoDataValue>{nodata!r}</NoDataValue>")
        lines += [
            "    <SimpleSource>",
            f'      <SourceFilename relativeToVRT="0">{escape(_gdal_name(band.href))}</SourceFilename>',
            f"      <SourceBand>{band.band}</SourceBand>",
            f'      <SourceProperties RasterXSize="{w}" RasterYSize="{h}" '
            f'DataType={quoteattr(gdal_type)} BlockXSize="{bx}" BlockYSize="{by}"/>',
            f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>',
            f'      <DstRect xOff="0" yOff="0" xSize="{width}" ySize="{height}"/>',
            "    </SimpleSource>",
            "  </VRTRasterBand>",
        ]
    lines.append("</VRTDataset>")
    write_text_atomic(target, "\n".join(lines) + "\n")


def stac_input(
    href: str | os.PathLike,
    bands: Sequence[str] | None,
    channels: int,
    folder: str | os.PathLike,
    assets: Sequence[str] | None = None,
) -> StacInput:
    """Read the item ``href``, choose its assets for the checkpoint's ``bands`` and write the VRT.

    The VRT is ``folder/<item id>.vrt``. Remote assets of a local item are refused unless
    ``BICORSEG_ALLOW_REMOTE`` is set; an item given as a URL allows them.
    """
    text = os.fspath(href)
    item = read_item(text)
    sources = select_bands(item, bands, channels, assets)
    local = [s for s in sources if not is_remote(_gdal_name(s.href))]
    remote = len(local) < len(sources)
    if _is_url(text) and local:  # a remote item may not make bicorseg read local files
        band = local[0]
        raise InputError(
            f"{text}: asset {band.asset} of a remote item is the local file {band.href}; refused"
        )
    if remote and not _is_url(text) and not remote_allowed():
        band = next(s for s in sources if s not in local)
        raise remote_refused(f"{text} (asset {band.asset})", band.href)
    target = Path(folder) / f"{safe_name(item.id)}.vrt"
    if target.exists():
        raise InputError(f"{text}: another STAC item given has the same id {item.id!r}")
    build_vrt(sources, target, text)
    when = item.properties.get("datetime") or item.properties.get("start_datetime")
    return StacInput(item.get_self_href() or text, target, when, remote, text)


# --- writing an item per output ----------------------------------------------------------------


def item_path(class_raster: Path) -> Path:
    """Where the STAC Item of a class raster is written: ``<stem>_item.json`` beside it."""
    return class_raster.with_name(class_raster.stem + ITEM_SUFFIX)


def _footprint(src: rasterio.DatasetReader) -> tuple[dict, list[float]]:
    """The raster's outline in EPSG:4326 (each edge densified) and its bbox."""
    left, bottom, right, top = src.bounds
    steps = np.linspace(0.0, 1.0, EDGE_POINTS, endpoint=False)
    xs = np.concatenate(
        [left + (right - left) * steps, np.full_like(steps, right), right - (right - left) * steps, np.full_like(steps, left)]
    )  # fmt: skip
    ys = np.concatenate(
        [np.full_like(steps, top), top - (top - bottom) * steps, np.full_like(steps, bottom), bottom + (top - bottom) * steps]
    )  # fmt: skip
    lons, lats = transform_points(src.crs, "EPSG:4326", xs.tolist(), ys.tolist())
    ring = [[float(x), float(y)] for x, y in zip(lons, lats)]
    ring.append(ring[0])
    bbox = [min(lons), min(lats), max(lons), max(lats)]
    return {"type": "Polygon", "coordinates": [ring]}, [float(v) for v in bbox]


def _class_entries(raster: ClassRaster) -> list[Any]:
    from pystac.extensions.classification import Classification

    names = raster.names if raster.names is not None else default_class_names(len(raster.palette))
    entries = [
        Classification.create(
            value=value,
            name=re.sub(r"[^0-9A-Za-z_-]+", "_", name).strip("_") or default_class_name(value),
            description=name,
            color_hint="".join(f"{c:02X}" for c in raster.palette[value])
            if value in raster.palette
            else None,
        )
        for value, name in enumerate(names)
    ]
    entries.append(Classification.create(value=NODATA, name="nodata", description="no data", nodata=True))
    return entries


MEDIA_TYPES = {
    ".tif": "image/tiff; application=geotiff",
    ".gpkg": "application/geopackage+sqlite3",
    ".fgb": "application/vnd.flatgeobuf",
    ".geojson": "application/geo+json",
    ".parquet": "application/vnd.apache.parquet",
}


def write_output_item(
    class_raster: str | os.PathLike,
    others: Mapping[str, str | os.PathLike] | None = None,
    source: StacInput | None = None,
    properties: Mapping[str, Any] | None = None,
) -> Path:
    """Write the STAC Item of ``class_raster`` (``<stem>_item.json``, atomically); returns its path.

    ``others`` are further outputs (asset key -> file beside it), ``source`` the item it was
    predicted from (its ``datetime`` and a ``derived_from`` link), ``properties`` extra properties.
    """
    pystac = require_cloud()
    from pystac.extensions.classification import ClassificationExtension
    from pystac.extensions.projection import ProjectionExtension

    class_raster = Path(class_raster)
    with ClassRaster.open(class_raster) as raster:
        src = raster.src
        if src.crs is None or src.transform.is_identity:
            raise InputError(f"{class_raster} has no CRS and transform: a STAC Item needs a footprint")
        geometry, bbox = _footprint(src)
        crs, transform, shape, bounds = src.crs, src.transform, [src.height, src.width], list(src.bounds)
        classes = _class_entries(raster)
        # what predict recorded (checkpoint, its sha256, settings, TTA) as bicorseg:* properties
        recorded = {
            f"bicorseg:{key[len('bicorseg_') :]}": value
            for key, value in src.tags().items()
            if key.startswith("bicorseg_") and key != CLASSES_TAG
        }
    when = source.datetime if source is not None and source.datetime else None
    moment = pystac.utils.str_to_datetime(when) if when else datetime.now(timezone.utc)
    item = pystac.Item(
        id=class_raster.stem,
        geometry=geometry,
        bbox=bbox,
        datetime=moment,
        properties={"created": datetime.now(timezone.utc).isoformat(), **recorded, **(properties or {})},
    )
    epsg = crs.to_epsg()
    ProjectionExtension.ext(item, add_if_missing=True).apply(
        epsg=epsg,
        wkt2=None if epsg else crs.to_wkt(),
        shape=shape,
        transform=[transform.a, transform.b, transform.c, transform.d, transform.e, transform.f],
        bbox=bounds,
    )
    for key, path in {"classes": class_raster, **(others or {})}.items():
        path = Path(path)
        item.add_asset(
            key,
            pystac.Asset(
                href=f"./{path.name}",
                media_type=MEDIA_TYPES.get(path.suffix.lower()),
                roles=["visual"] if key == "color" else ["data"],
                title=key,
            ),
        )
    ClassificationExtension.ext(item.assets["classes"], add_if_missing=True).apply(classes=classes)
    if source is not None:
        item.add_link(pystac.Link("derived_from", source.item_href, media_type="application/geo+json"))
    target = item_path(class_raster)
    write_text_atomic(target, json.dumps(item.to_dict(include_self_link=False), indent=2) + "\n")
    return target
