"""QGIS styles: the QML is XML with a paletted renderer, one entry per class with its colour and name."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from bicorseg.errors import ConfigError
from bicorseg.gis.qml import qml_path, write_qml

NAMES = ("impervious", "building", "low vegetation", "tree", "car", "clutter & <other>")
PALETTE = ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0))


def test_qml_has_one_paletted_entry_per_class_and_nodata_transparent(tmp_path):
    raster = tmp_path / "scene.tif"
    written = write_qml(raster, NAMES, PALETTE)
    assert written == tmp_path / "scene.qml"
    text = written.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>")
    root = ET.fromstring(text)
    assert root.tag == "qgis"
    renderers = root.findall("./pipe/rasterrenderer")
    assert len(renderers) == 1
    renderer = renderers[0]
    assert renderer.get("type") == "paletted" and renderer.get("band") == "1"
    entries = renderer.findall("./colorPalette/paletteEntry")
    assert [(e.get("value"), e.get("color"), e.get("label"), e.get("alpha")) for e in entries] == [
        ("0", "#ffffff", "impervious", "255"),
        ("1", "#0000ff", "building", "255"),
        ("2", "#00ffff", "low vegetation", "255"),
        ("3", "#00ff00", "tree", "255"),
        ("4", "#ffff00", "car", "255"),
        ("5", "#ff0000", "clutter & <other>", "255"),  # escaped in the file, intact when parsed
    ]
    transparent = renderer.findall("./rasterTransparency/singleValuePixelList/pixelListEntry")
    assert [(t.get("min"), t.get("max"), t.get("percentTransparent")) for t in transparent] == [
        ("255", "255", "100")
    ]
    resampling = root.find("./pipe/provider/resampling")
    assert resampling.get("zoomedOutResamplingMethod") == "nearestNeighbour"
    assert list(tmp_path.iterdir()) == [written]  # no temporary left


def test_qml_path_from_a_raster_or_a_stem_and_a_palette_mapping(tmp_path):
    assert qml_path(tmp_path / "a.tif") == tmp_path / "a.qml"
    assert qml_path(tmp_path / "map.v2") == tmp_path / "map.v2.qml"
    written = write_qml(tmp_path / "stem", ["a", "b"], {0: (1, 2, 3), 1: (16, 32, 48)}, nodata=None)
    root = ET.parse(written).getroot()
    assert [e.get("color") for e in root.iter("paletteEntry")] == ["#010203", "#102030"]
    assert root.find(".//singleValuePixelList") is None


def test_a_class_without_a_colour_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"no colour for class 1 \('b'\)"):
        write_qml(tmp_path / "x.tif", ["a", "b"], [(0, 0, 0)])
    assert list(tmp_path.iterdir()) == []


def test_names_with_control_characters_never_reach_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"QGIS style: class 1 has the name 'b\\x07', with a control"):
        write_qml(tmp_path / "x.tif", ["a", "b\x07"], [(0, 0, 0), (1, 1, 1)])
    assert list(tmp_path.iterdir()) == []
