"""Options shared by several sub-commands: the test-time augmentation of ``predict``, ``evaluate``, ``submit``."""

from __future__ import annotations

import argparse

from bicorseg.spec import TTA_MERGES, TTA_MODES


def add_tta_arguments(parser: argparse.ArgumentParser) -> None:
    """``--tta``, ``--tta-scales`` and ``--tta-merge``."""
    parser.add_argument(
        "--tta",
        choices=TTA_MODES,
        default="none",
        help="test-time augmentation: none; lr (horizontal x vertical flip, 4 passes); d4 (the 8 dihedral "
        "transforms); paper (the passes the original publication used for the checkpoint's dataset: "
        "Vaihingen 40, Potsdam 4, LoveDA 8, logits averaged) (default: none)",
    )
    parser.add_argument(
        "--tta-scales",
        metavar="LIST",
        help="also run every pass at these input scales, e.g. 0.75,1,1.25 (bicubic resizing; not with paper)",
    )
    parser.add_argument(
        "--tta-merge",
        choices=TTA_MERGES,
        help="average the passes' logits or probabilities (default: probs; paper: logits, fixed)",
    )


def tta_options(args: argparse.Namespace) -> dict:
    """The parsed TTA options as keyword arguments (``tta``, ``tta_scales``, ``tta_merge``)."""
    from bicorseg.errors import ConfigError
    from bicorseg.inference.tta import parse_scales

    scales = parse_scales(args.tta_scales)
    if args.tta == "paper" and (scales is not None or args.tta_merge is not None):
        raise ConfigError(
            "--tta paper fixes its passes and merge: leave out --tta-scales and --tta-merge "
            "(or build the product you want from --tta lr or d4 with them)"
        )
    return {"tta": args.tta, "tta_scales": scales, "tta_merge": args.tta_merge}
