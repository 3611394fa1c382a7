"""The one rule for class names (bicorseg.spec.check_class_names), as dataset specs and checkpoints apply it."""

from __future__ import annotations

import pytest

from bicorseg.errors import ConfigError, InputError
from bicorseg.spec import MAX_CLASS_NAME, DatasetSpec, check_class_names


def _spec(names: tuple) -> DatasetSpec:
    return DatasetSpec("d", names, ((0, 0, 0),) * len(names), 255, tuple(range(len(names))))


def test_printable_names_of_any_script_and_markup_are_names():
    names = ("tree [deciduous]", "café & <bar>", "建物", "a" * MAX_CLASS_NAME)
    assert check_class_names(list(names), "t") == names
    assert _spec(names).class_names == names


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("b\x1b[31m", r"class 1 has the name 'b\\x1b\[31m', with a control or format character"),
        ("b\u200f", r"class 1 has the name 'b\\u200f', with a control or format"),  # right-to-left mark
        ("", r"class 1: a class name has 1 to 100 characters, got 0"),
        ("b" * (MAX_CLASS_NAME + 1), r"class 1: a class name has 1 to 100 characters, got 101"),
        (7, r"class 1 has the name 7, not a string"),
        ("a", r"the class name 'a' is given twice"),
    ],
)
def test_names_that_would_break_a_terminal_or_a_file_are_refused(name, message):
    with pytest.raises(ConfigError, match=rf"dataset 'd': {message}"):
        _spec(("a", name))
    with pytest.raises(InputError, match=message):  # the caller chooses the kind of error
        check_class_names(["a", name], "x", InputError)
