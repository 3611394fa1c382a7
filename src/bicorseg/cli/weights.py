"""``bicorseg weights``: the ImageNet weights of the backbones in their caches: list, download, import."""

from __future__ import annotations

import argparse

from bicorseg.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "weights",
        help="list, download or import the ImageNet weights of the backbones (pretrained: imagenet)",
        description=(
            "The ImageNet weights that 'pretrained: imagenet' reads, in the caches of torchvision (torch hub: "
            "$TORCH_HOME/hub/checkpoints) and timm (the Hugging Face cache: $HF_HOME/hub). "
            "list: every backbone with weights, the file to carry over, and where it is cached (path, size, "
            "sha256). download NAME...: fetch them into the cache (on a machine with network access). "
            "import FILE --name NAME: install a file carried over by hand (on a machine without), checked "
            "first: its sha256 against the published one where known (torchvision's file names; --sha256), "
            "read without running code, every weight finite, the keys and shapes of the backbone."
        ),
    )
    parser.add_argument("action", choices=("list", "download", "import"), help="what to do")
    parser.add_argument(
        "targets", nargs="*", metavar="NAME|FILE", help="download: backbone names; import: the file"
    )
    parser.add_argument("--name", help="import: the backbone the file is the weights of, e.g. convnext_atto")
    parser.add_argument(
        "--sha256",
        metavar="HEX",
        help="import: the file's published sha256 (the Hub's file page shows it; 'weights list' prints it "
        "on the machine that downloaded it)",
    )
    parser.add_argument("--overwrite", action="store_true", help="import: replace other cached weights")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bicorseg import pretrained

    if args.action != "import" and (args.name or args.sha256 or args.overwrite):
        raise ConfigError(f"--name, --sha256 and --overwrite are options of import, not of {args.action}")
    if args.action == "list":
        if args.targets:
            raise ConfigError("list takes no arguments")
        for label, folder in pretrained.cache_locations().items():
            print(f"{label} cache: {folder}")
        for entry in pretrained.list_weights():
            source = entry.source
            where = f"not cached: {source.filename} from {source.url}"
            if entry.path is not None:
                where = f"{entry.path} ({(entry.size or 0) / 1e6:.1f} MB, sha256 {entry.sha256})"
            print(f"{source.name:<20} {source.library:<12} {where}")
        return 0
    if args.action == "download":
        if not args.targets:
            raise ConfigError("download: give one or more backbone names, e.g. convnext_atto")
        for name in args.targets:
            path = pretrained.download(pretrained.weights_source(name))
            print(f"{name}: {path}")
        return 0
    if len(args.targets) != 1 or not args.name:
        raise ConfigError("import: give one FILE and the backbone it is for: weights import FILE --name NAME")
    result = pretrained.import_weights(
        args.targets[0], args.name, sha256=args.sha256, overwrite=args.overwrite
    )
    verb = "replaced" if result.replaced else "installed"
    print(f"{args.name}: {verb} {result.path} (sha256 {result.sha256}; checked: {result.checked})")
    return 0
