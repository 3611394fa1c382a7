"""Helpers for the network-guard tests: a loopback listener that must see no connection, and files
that make GDAL reach for the network by themselves (web-service descriptions, tile indexes).

* :class:`Listener`: a TCP server on 127.0.0.1 that counts every connection it is offered (a
  connection is counted even if the client never sends a byte, so any attempt shows);
* :func:`tms_description`: a GDAL WMS/TMS service description whose tiles come from a URL;
* :func:`tile_index`: a GDAL tile index (GTI, a GeoPackage) whose tiles are any GDAL names;
* :func:`vrt_of`: a VRT with one source per band, the source written as given (XML-escaped).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape

import numpy as np


class Listener:
    """A TCP server on 127.0.0.1 that records every connection it is offered."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.05)
        self.port = self.server.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def url(self, relative: str) -> str:
        return f"http://127.0.0.1:{self.port}/{relative.lstrip('/')}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.server.accept()
            except TimeoutError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> int:
        time.sleep(0.2)  # a connection still on its way is counted
        self._stop.set()
        self._thread.join()
        self.server.close()
        return self.connections


def tms_description(url_template: str, bands: int = 3) -> str:
    """A GDAL_WMS (TMS service) description of one 256 px tile at level 0, fetched from ``url_template``
    (``${z}``, ``${x}``, ``${y}`` are replaced by GDAL)."""
    return (
        f'<GDAL_WMS><Service name="TMS"><ServerUrl>{escape(url_template)}</ServerUrl></Service>'
        "<DataWindow><UpperLeftX>-20037508.34</UpperLeftX><UpperLeftY>20037508.34</UpperLeftY>"
        "<LowerRightX>20037508.34</LowerRightX><LowerRightY>-20037508.34</LowerRightY>"
        "<TileLevel>0</TileLevel><TileCountX>1</TileCountX><TileCountY>1</TileCountY>"
        "<YOrigin>top</YOrigin></DataWindow><Projection>EPSG:3857</Projection>"
        f"<BlockSizeX>256</BlockSizeX><BlockSizeY>256</BlockSizeY><BandsCount>{bands}</BandsCount>"
        "<MaxConnections>1</MaxConnections><Cache/></GDAL_WMS>"
    )


def vrt_of(path: Path, source: str, size: int = 16, bands: int = 3) -> Path:
    """A VRT of ``size`` px whose every band reads band 1.. of ``source`` (a GDAL name, escaped)."""
    body = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="0">{escape(source)}</SourceFilename><SourceBand>{b}</SourceBand>'
        f'<SrcRect xOff="0" yOff="0" xSize="{size}" ySize="{size}"/>'
        f'<DstRect xOff="0" yOff="0" xSize="{size}" ySize="{size}"/></SimpleSource></VRTRasterBand>'
        for b in range(1, bands + 1)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f'<VRTDataset rasterXSize="{size}" rasterYSize="{size}"><SRS>EPSG:32633</SRS>'
        f"<GeoTransform>500000, 0.25, 0, 5000000, 0, -0.25</GeoTransform>{body}</VRTDataset>"
    )
    return path


def tile_index(path: Path, tiles: Sequence[tuple[str, tuple[float, float, float, float]]], crs: str) -> Path:
    """A GDAL tile index (``*.gti.gpkg``): one feature per tile, its footprint and its ``location``."""
    import pyogrio.raw
    import shapely

    geometry = np.array([shapely.to_wkb(shapely.box(*bounds)) for _, bounds in tiles], dtype=object)
    locations = np.array([location for location, _ in tiles], dtype=object)
    path.parent.mkdir(parents=True, exist_ok=True)
    pyogrio.raw.write(
        path, geometry, [locations], ["location"], crs=crs, driver="GPKG", geometry_type="Polygon"
    )
    return path
