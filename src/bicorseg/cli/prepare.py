"""``bicorseg prepare``: turn an official dataset release into patches, masks and a manifest."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from bicorseg.atomic import ensure_writable
from bicorseg.errors import ConfigError
from bicorseg.yaml_files import read_yaml_mapping

DATASET_CHOICES = ("vaihingen", "potsdam", "loveda")
# option -> default; the resolved config is defaults < --config YAML < command line
DEFAULTS: dict[str, Any] = {
    "source": None,
    "output": None,
    "splits": None,
    "bands": None,
    "patch_size": None,
    "unknown_colours": "error",
    "protocol": "clean",
    "force": False,
    "verify": True,
    "progress": True,
}


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="turn an official release (Vaihingen, Potsdam, LoveDA) into training data",
        description=(
            "Check an official dataset release (unpacked folders and/or its zip archives), convert its "
            "labels to class indices (ISPRS eroded boundary -> ignore; LoveDA 0 -> ignore, 1..7 -> 0..6), "
            "cut patches by the published protocol and write OUTPUT/{split}/images, OUTPUT/{split}/masks "
            "and OUTPUT/manifest.json (files, sizes, checksums, class pixel counts). Re-running skips "
            "finished work and verifies it."
        ),
    )
    parser.add_argument("dataset", choices=DATASET_CHOICES, help="which release")
    parser.add_argument(
        "--source",
        action="append",
        metavar="PATH",
        help="folder or zip archive of the release (repeat for several)",
    )
    parser.add_argument("--output", metavar="DIR", help="output folder")
    parser.add_argument(
        "--splits", metavar="LIST", help="comma-separated splits to prepare (default: train,val,test)"
    )
    parser.add_argument("--bands", metavar="VARIANT", help="band variant: Potsdam RGB (default) or IRRG")
    parser.add_argument(
        "--patch-size",
        type=int,
        metavar="PX",
        help="patch size instead of the protocol's 1024 (strides keep their ratio); for quick experiments",
    )
    parser.add_argument(
        "--unknown-colours",
        choices=("error", "ignore"),
        default=None,
        help="label colours/values outside the class table: stop with an error (default) or mark them ignored",
    )
    parser.add_argument(
        "--protocol",
        choices=("clean", "paper"),
        default=None,
        help="clean (default): padding is ignored; paper: as the original code (ISPRS padding labelled "
        "impervious surface, flipped copies flipped before padding, Vaihingen car zoom)",
    )
    parser.add_argument(
        "--force", action="store_true", default=None, help="replace an output prepared for another dataset"
    )
    parser.add_argument(
        "--no-verify",
        dest="verify",
        action="store_false",
        default=None,
        help="on rerun, trust finished files without checking their checksums",
    )
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", default=None, help="no progress bar"
    )
    parser.add_argument("--config", metavar="YAML", help="options as a YAML mapping (command line wins)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved options and exit")
    parser.set_defaults(func=run)


# the YAML types each option takes (lists hold strings)
OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "source": (str, list),
    "output": (str,),
    "splits": (str, list),
    "bands": (str,),
    "patch_size": (int,),
    "unknown_colours": (str,),
    "force": (bool,),
    "verify": (bool,),
    "progress": (bool,),
}


def _check_type(path: Path, key: str, value: Any) -> None:
    types = OPTION_TYPES[key]
    ok = value is None or (isinstance(value, types) and (bool in types or not isinstance(value, bool)))
    if ok and isinstance(value, list):
        ok = all(isinstance(item, str) for item in value)
    if not ok:
        expected = " or ".join("a list of strings" if t is list else t.__name__ for t in types)
        raise ConfigError(f"--config {path}: {key} must be {expected}, got {value!r}")


def resolve(args: argparse.Namespace) -> dict[str, Any]:
    """Defaults, then the YAML config, then the command line."""
    config = dict(DEFAULTS)
    if args.config:
        path = Path(args.config)
        loaded = read_yaml_mapping(path, "option file")
        loaded = {str(k).replace("-", "_"): v for k, v in loaded.items()}
        unknown = sorted(set(loaded) - set(DEFAULTS))
        if unknown:
            raise ConfigError(f"--config {path}: unknown option(s) {', '.join(unknown)}")
        for key, value in loaded.items():
            _check_type(path, key, value)
        config.update(loaded)
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            config[key] = value
    if isinstance(config["source"], str):
        config["source"] = [config["source"]]
    if isinstance(config["splits"], str):
        config["splits"] = [s.strip() for s in config["splits"].split(",") if s.strip()]
    return {"dataset": args.dataset, **config}


def run(args: argparse.Namespace) -> int:
    from bicorseg.data.prepare import prepare

    config = resolve(args)
    if args.print_config:
        print(yaml.safe_dump(config, sort_keys=False), end="")
        return 0
    if not config["source"]:
        raise ConfigError("--source: give the folder or archives of the release")
    if not config["output"]:
        raise ConfigError("--output: give the output folder")
    ensure_writable(config["output"], folder=True)
    result = prepare(
        config["dataset"],
        config["source"],
        config["output"],
        splits=config["splits"],
        variant=config["bands"],
        patch_size=config["patch_size"],
        unknown_colours=config["unknown_colours"],
        protocol=config["protocol"],
        force=bool(config["force"]),
        verify=bool(config["verify"]),
        progress=bool(config["progress"]) and sys.stderr.isatty(),
    )
    print(result.summary())
    return 0
