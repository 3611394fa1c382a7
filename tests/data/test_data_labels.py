"""Colour and value label tables: exact conversion, ignore codes, unknown codes never silently mapped."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bicorseg.data.datasets import ISPRS_COLOURS, ISPRS_LABELS, LOVEDA
from bicorseg.data.labels import (
    LabelTable,
    colour_table,
    colourise,
    gdal_colour_map,
    nearest_indices,
    parse_colour,
)
from bicorseg.errors import ConfigError, InputError
from bicorseg.spec import DatasetSpec, LabelEncoding


def test_isprs_colours_and_boundary():
    index = np.array([[0, 1, 2, 3], [4, 5, 6, 6]], dtype=np.uint8)
    colours = {i: c for i, c in enumerate(ISPRS_COLOURS)} | {6: (0, 0, 0)}
    rgb = colourise(index, colours)
    assert tuple(rgb[:, 1, 2]) == (0, 0, 0) and tuple(rgb[:, 0, 1]) == (0, 0, 255)
    out, unknown = ISPRS_LABELS.encode(rgb, "x.tif")
    np.testing.assert_array_equal(out, index)
    assert unknown == 0 and out.dtype == np.uint8


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=64))
def test_isprs_round_trip(values):
    index = np.array(values, dtype=np.uint8).reshape(1, -1)
    colours = {i: c for i, c in enumerate(ISPRS_COLOURS)} | {6: (0, 0, 0)}
    np.testing.assert_array_equal(ISPRS_LABELS.encode(colourise(index, colours), "x")[0], index)


def test_unknown_colour_names_file_colour_and_place():
    rgb = colourise(np.zeros((3, 4), np.uint8), {0: (255, 255, 255)})
    rgb[:, 1, 2] = (12, 34, 56)
    rgb[:, 2, 0] = (12, 34, 56)
    with pytest.raises(InputError) as error:
        ISPRS_LABELS.encode(rgb, "area9_label.tif")
    text = str(error.value)
    assert "area9_label.tif" in text and "(12, 34, 56)" in text and "#0C2238" in text
    assert "2 pixels" in text and "row 1, column 2" in text and "\n" not in text
    # Only when asked explicitly, unknown colours become ignore (and are counted).
    out, unknown = ISPRS_LABELS.encode(rgb, "x", unknown="ignore")
    assert unknown == 2 and out[1, 2] == 6 and out[0, 0] == 0


def test_value_table_loveda():
    raw = np.array([[0, 1, 2, 7]], dtype=np.uint8)
    out, _ = LOVEDA.label_table.encode(raw, "m.png")
    assert out.tolist() == [[7, 0, 1, 6]]
    with pytest.raises(InputError, match=r"m\.png: 1 pixels have values not in the class table.*value 9"):
        LOVEDA.label_table.encode(np.array([[1, 9]], dtype=np.uint8), "m.png")


def test_identity_table_and_validation():
    table = LabelTable.identity(3, 255)
    assert table.encode(np.array([[0, 2, 255]], np.uint8), "m")[0].tolist() == [[0, 2, 255]]
    with pytest.raises(InputError, match="value 3"):
        table.encode(np.array([[3]], np.uint8), "m")
    with pytest.raises(ConfigError, match=r"must be in"):
        LabelTable.from_colours([(0, 0, 0), (1, 1, 1)], ignore_index=1)
    with pytest.raises(InputError, match="colour-coded"):
        ISPRS_LABELS.encode(np.zeros((4, 4), np.uint8), "m")


def test_parse_colour():
    assert parse_colour("#3C1098") == (60, 16, 152) == parse_colour("3c1098") == parse_colour([60, 16, 152])
    for bad in ("#12345", "red", [1, 2], [0, 0, 256], [0.5, 1, 2]):
        with pytest.raises(ConfigError):
            parse_colour(bad)


def test_one_colour_table_for_colour_maps_figures_and_gdal():
    palette = [(10, 20, 30), (40, 50, 60)]
    classes = np.array([[0, 1], [255, 7]], np.uint8)  # 255: nodata, 7: no class
    rgba = colourise(classes, palette, alpha=True)
    assert rgba.shape == (4, 2, 2) and rgba.flags.c_contiguous
    assert rgba[:, 0, 0].tolist() == [10, 20, 30, 255] and rgba[:, 0, 1].tolist() == [40, 50, 60, 255]
    assert rgba[:, 1, 0].tolist() == [0, 0, 0, 0] and rgba[3, 1, 1] == 0  # transparent
    white = colour_table(palette, (255, 255, 255))
    assert white.shape == (256, 3) and white[1].tolist() == [40, 50, 60] and white[2].tolist() == [255] * 3
    assert gdal_colour_map(palette) == {0: (10, 20, 30, 255), 1: (40, 50, 60, 255)}
    assert gdal_colour_map({3: (1, 2, 3)}) == {3: (1, 2, 3, 255)}


def test_colour_labels_of_an_index_trained_spec_are_decoded_by_its_palette():
    spec = DatasetSpec("x", ("a", "b"), ((0, 0, 255), (255, 255, 0)), 5, (0, 1))
    assert LabelTable.for_spec(spec).kind == "value"
    table = LabelTable.for_spec(spec, colour_masks=True)
    rgb = colourise(np.array([[1, 0]], np.uint8), spec.palette)
    assert table.kind == "colour" and table.encode(rgb, "x")[0].tolist() == [[1, 0]]
    values = DatasetSpec("v", ("a", "b"), ((0, 0, 0), (1, 1, 1)), 5, (0, 1),
                         label_encoding=LabelEncoding("values", (3, 9)))  # fmt: skip
    assert LabelTable.for_spec(values, colour_masks=True).kind == "value"  # the spec's own encoding


def test_nearest_indices_are_pixel_centres():
    assert nearest_indices(2, 4).tolist() == [0, 0, 1, 1]
    assert nearest_indices(4, 2).tolist() == [1, 3]  # the centres of 2-pixel blocks: 1.0 and 3.0
    assert nearest_indices(2, 41)[20] == 1 and nearest_indices(3, 1).tolist() == [1]
