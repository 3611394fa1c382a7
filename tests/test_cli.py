"""The command line: fast help without torch, every train option explained, one-line errors with the nearest option."""

from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from bicorseg import typedconfig
from bicorseg.cli.main import build_parser, error_line, main, one_line_warnings
from bicorseg.cli.predict import resolve_engine
from bicorseg.errors import BicorsegWarning, ConfigError, OutputError
from bicorseg.training.config import DERIVED_KEYS, SECTIONS
from tests.helpers.cli import refused

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "lightning", "rasterio", "matplotlib")


def _imported(*args: str) -> tuple[int, set[str], str]:
    """Exit status, top-level modules imported, and stderr of ``python -X importtime -m bicorseg.cli.main ARGS``."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bicorseg.cli.main", *args],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    modules = set()
    lines = []
    for line in result.stderr.splitlines():
        if line.startswith("import time:"):
            name = line.rsplit("|", 1)[-1].strip()
            modules.add(name.split(".")[0])
        else:
            lines.append(line)
    return result.returncode, modules, "\n".join(lines)


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (["--help"], 0),
        (["train", "--help"], 0),
        (["predict", "--help"], 0),
        (["train", "--optimizer.lrr", "1"], 2),  # an argument error
        (["predict", "x.tif", "--checkpoint", "m.ckpt", "--output", "out", "--tiel", "3"], 2),
        (["trian"], 2),
    ],
)
def test_help_and_argument_errors_import_nothing_heavy(args: list[str], status: int) -> None:
    code, modules, err = _imported(*args)
    assert code == status, err
    assert "bicorseg" in modules  # the import log is read correctly
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_python_dash_m_bicorseg_is_the_command_line() -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bicorseg", "predict", "--help"],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: bicorseg predict ")
    modules = {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in result.stderr.splitlines()}
    assert not modules & set(HEAVY), sorted(modules & set(HEAVY))


def test_every_train_option_states_its_meaning_and_default(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    _, commands = build_parser()
    actions = {a.option_strings[0]: a for a in commands["train"]._actions if a.option_strings}
    for section, cls in SECTIONS.items():
        for info in typedconfig.fields_of(cls, section):
            flag = f"--{info.key}"
            assert flag in actions and flag in text, flag
            assert info.doc, f"{flag} has no description in its dataclass's docstring"
            help_text = actions[flag].help
            assert help_text.startswith(info.doc[:20].replace("%", "%%")), (flag, help_text)
            if tuple(info.key.split(".")) in DERIVED_KEYS:
                assert "default: the dataset's" in help_text
            elif typedconfig.section_of(info.type) is not None:
                assert f"default: the {flag}.* keys" in help_text
            else:
                assert (
                    f"default: {typedconfig.to_yaml(info.default).strip().removesuffix('...').strip()}"
                    in help_text
                )


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["train", "--optimizer.lrr", "1"],
            "unrecognized option --optimizer.lrr; did you mean --optimizer.lr?",
        ),
        (["train", "--trainer.epochs=3"], "did you mean --trainer.max_epochs?"),
        (["train", "--config", "tiny-tset"], "did you mean 'tiny-test'?"),
        (["train", "--config", "tiny-test", "--set", "optimizer.lrr=1"], "did you mean optimizer.lr?"),
        (["train", "--config", "tiny-test", "--trainer.precision", "bf1"], "did you mean 'bf16'?"),
        (["predict", "a.tif", "--checkpoint", "m", "--output", "o", "--tiel", "3"], "did you mean --tile?"),
        (
            ["predict", "a.tif", "--checkpoint", "m", "--output", "o", "--engine", "onx"],
            "did you mean 'onnx'?",
        ),
        (["trian"], "did you mean 'train'?"),
    ],
)
def test_misspellings_name_the_nearest_valid_one(args, expected, capsys: pytest.CaptureFixture) -> None:
    try:
        code = main(args)
    except SystemExit as exit_info:  # argparse's own errors
        code = exit_info.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and expected in err, err


def test_every_parser_refuses_abbreviated_options(capsys: pytest.CaptureFixture) -> None:
    """``--overwr`` is not taken for ``--overwrite``: every command's parser refuses
    abbreviations, and the refusal names the option meant."""
    parser, commands = build_parser()
    for each in [parser, *commands.values()]:
        assert each.allow_abbrev is False, each.prog
    with pytest.raises(SystemExit) as exit_info:  # argparse would take it for --overwrite
        main(["predict", "a.tif", "--checkpoint", "m", "--output", "o", "--overwr"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "unrecognized option --overwr; did you mean --overwrite?" in err


def test_config_keys_are_checked_before_any_data_is_read(tmp_path: Path, capsys) -> None:
    assert main(["train", "--config", "loveda", "--optimizer.lr", "abc", "--output", str(tmp_path)]) == 2
    assert capsys.readouterr().err == "bicorseg train: error: optimizer.lr: expected a number, got 'abc'\n"
    assert main(["train", "--config", "loveda", "--data.augment.mosaic_p", "0", "--print-config"]) == 0
    assert "mosaic_p: 0" in capsys.readouterr().out  # a key inside a mapping, set from the command line
    config = tmp_path / "prepare.yaml"
    config.write_text("patch_sise: 48\n")
    assert main(["prepare", "vaihingen", "--config", str(config), "--print-config"]) == 2
    assert "patch_sise: unknown key; did you mean patch_size?" in capsys.readouterr().err


def test_core_errors_are_printed_with_the_commands_options(capsys: pytest.CaptureFixture) -> None:
    _, commands = build_parser()
    predict = commands["predict"]
    assert error_line(ConfigError("must be at least 1, got 0", key="batch_size"), predict) == (
        "--batch-size: must be at least 1, got 0"
    )
    assert error_line(OutputError("x.tif exists: use `overwrite` to recompute it"), predict) == (
        "x.tif exists: use --overwrite to recompute it"
    )
    assert (
        error_line(ConfigError("leave out `tta_scales`", key="tta"), predict)
        == "--tta: leave out --tta-scales"
    )
    assert error_line(ConfigError("bad", key="not_an_option"), predict) == "not_an_option: bad"
    assert (
        str(ConfigError("must be at least 1, got 0", key="batch_size"))
        == "batch_size: must be at least 1, got 0"
    )
    # the parameter survives a trip to a worker process and back
    copy = pickle.loads(pickle.dumps(ConfigError("must be positive", key="tile")))
    assert (copy.key, copy.detail, str(copy)) == ("tile", "must be positive", "tile: must be positive")
    # end to end: a core check (PredictOptions) named as the option
    assert main(["predict", "a.tif", "--checkpoint", "m.ckpt", "--output", "o", "--tile", "16"]) == 2
    assert capsys.readouterr().err == "bicorseg predict: error: --tile: must be at least 32 pixels, got 16\n"
    assert main(["demo", "--minutes", "0"]) == 2
    assert capsys.readouterr().err == "bicorseg demo: error: --minutes: must be positive, got 0.0\n"


def test_warnings_are_one_line_with_the_options_and_said_once(capsys: pytest.CaptureFixture) -> None:
    """A layer read by two steps warns in both: the command says it once."""
    _, commands = build_parser()
    with warnings.catch_warnings(), one_line_warnings("predict", commands["predict"]):
        warnings.simplefilter("always")  # as when the filters change between the two reads
        for _ in range(2):
            warnings.warn("x.tif is uint16: the `rescale` option maps it", BicorsegWarning, stacklevel=1)
        warnings.warn("y.tif is uint16: the `rescale` option maps it", BicorsegWarning, stacklevel=1)
    assert capsys.readouterr().err.splitlines() == [
        "bicorseg predict: warning: x.tif is uint16: the --rescale option maps it",
        "bicorseg predict: warning: y.tif is uint16: the --rescale option maps it",
    ]


def test_an_onnx_checkpoint_selects_the_onnx_engine() -> None:
    assert resolve_engine("auto", "model.onnx") == "onnx"
    assert resolve_engine("auto", "MODEL.ONNX") == "onnx"
    assert resolve_engine("auto", "runs/x/checkpoints/best.ckpt") == "torch"
    assert resolve_engine("onnx", "model.onnx") == "onnx"
    with pytest.raises(ConfigError, match=r"model\.onnx is an ONNX model: run it with --engine onnx"):
        resolve_engine("torch", "model.onnx")


def test_shared_options_default_to_the_python_apis_values() -> None:
    import dataclasses
    import inspect

    from bicorseg.cli.common import SHARED_OPTIONS
    from bicorseg.evaluation import evaluate_model
    from bicorseg.gis.areas import AreaOptions
    from bicorseg.gis.polygons import VectorizeOptions
    from bicorseg.inference.onnx import export_onnx
    from bicorseg.inference.predictor import PredictOptions

    _, commands = build_parser()

    def fields(cls: type) -> dict:
        return {f.name: f.default for f in dataclasses.fields(cls)}

    predict_options = fields(PredictOptions)

    def parameters(function) -> dict:
        return {name: p.default for name, p in inspect.signature(function).parameters.items()}

    tta = {"tta", "tta_scales", "tta_merge"}
    checked = {  # command: (the defaults of the Python API it maps to, the options compared)
        "predict": (
            predict_options,
            {
                "batch_size",
                "device",
                "precision",
                "overwrite",
                "tile",
                "overlap",
                "aoi",
                "rescale",
                "threads",
                *tta,
            },
        ),
        "heatmaps": (predict_options, {"batch_size", "device", "precision", "tile", "overlap", "rescale"}),
        "submit": (predict_options, {"batch_size", "device", "precision", *tta}),
        "evaluate": (
            parameters(evaluate_model),
            {"batch_size", "device", "num_workers", "rescale", "threads", *tta},
        ),
        "export": (parameters(export_onnx), {"tile", "overlap"}),
        "areas": (fields(AreaOptions), {"aoi", "class_table", "window"}),
        "vectorize": (fields(VectorizeOptions), {"class_table", "window", "overwrite"}),
    }
    for command, (python, names) in checked.items():
        cli = {action.dest: action.default for action in commands[command]._actions}
        assert {name: cli[name] for name in names} == {name: python[name] for name in names}, command
    # every shared option is compared, but the checkpoint (required) and --allow-remote (a switch the
    # Python API has no default for: remote_access(allow) is always told)
    compared = set().union(*(names for _, names in checked.values()))
    assert set(SHARED_OPTIONS) - compared == {"checkpoint", "allow_remote"}

    # every command that takes a shared option declares it from the one table: same type, default,
    # choices and kind of value wherever it appears (only the help may say more for the command)
    declared = (
        "option_strings",
        "dest",
        "type",
        "default",
        "choices",
        "metavar",
        "required",
        "nargs",
        "const",
    )
    for name, options in SHARED_OPTIONS.items():
        reference = argparse.ArgumentParser().add_argument(
            f"--{name.replace('_', '-')}", dest=name, **options
        )
        taking = {
            command: action
            for command, parser in commands.items()
            for action in parser._actions
            if f"--{name.replace('_', '-')}" in action.option_strings
        }
        assert len(taking) >= 2, (name, sorted(taking))
        for command, action in taking.items():
            assert type(action) is type(reference), (name, command)
            assert [getattr(action, a) for a in declared] == [getattr(reference, a) for a in declared], (
                name,
                command,
            )


def test_evaluation_precision_is_fp32_where_the_paper_is_reproduced() -> None:
    from bicorseg.cli.common import evaluation_precision

    assert evaluation_precision("auto", paper=True) == "fp32"  # the original code evaluates in fp32
    assert evaluation_precision("auto", paper=False) == "auto"
    assert evaluation_precision("bf16", paper=True) == "bf16"  # asked for: kept


OPTION_CASES = [
    (["train", "--config", "tiny-test", "--trainer.devices", "0"], "trainer.devices: give at least 1 device"),
    (["train", "--config", "tiny-test", "--trainer.devices", "[0, 0]"], "trainer.devices: give a non-empty list"),
    (["train", "--config", "tiny-test", "--optimizer.lr", ".inf"], "optimizer.lr: must be a finite number"),
    (["train", "--config", "tiny-test", "--model.tau=-.inf"], "model.tau: must be a finite number"),
    (["train", "--config", "tiny-test", "--trainer.gradient_clip_val", ".nan"],
     "trainer.gradient_clip_val: must be a finite number"),
    (["evaluate", "--checkpoint", "{ckpt}", "--dataset", "synthetic", "--limit", "-1"],
     "--limit must be at least 1 sample, got -1"),
    (["evaluate", "--checkpoint", "{ckpt}", "--dataset", "synthetic", "--num-workers", "-2"],
     "--num-workers must not be negative"),
    (["prepare", "loveda", "--source", "{tmp}", "--output", "{tmp}/p", "--patch-size", "1"],
     "--patch-size: must be at least 32 pixels, not 1"),
    (["prepare", "loveda", "--config", "{tmp}/options.yaml"], "options.yaml: patch_size: expected an integer, got 'big'"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), OPTION_CASES, ids=[" ".join(c[0][:4]) for c in OPTION_CASES])
def test_out_of_range_options_name_the_option(args, message, tmp_path, capsys, checkpoint) -> None:
    (tmp_path / "options.yaml").write_text("source: x\npatch_size: big\n")
    args = [a.format(ckpt=checkpoint, tmp=tmp_path) for a in args]
    if args[0] == "train":
        args += ["--output", str(tmp_path / "run")]
    assert message in refused(capsys, *args)
    assert not (tmp_path / "run").exists() and not (tmp_path / "p").exists()
