"""Planning: which source files of a release make which samples of which split.

:func:`plan` matches the files found in the sources (:mod:`bicorseg.data.sources`) against the
release's declared file patterns (:mod:`bicorseg.data.datasets`) and the protocol's split rules, and
returns one :class:`Item` (a tile with its label) per source image, or an error listing everything
that is missing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import cast

from bicorseg.data.datasets import BandVariant, Release, SplitRule
from bicorseg.data.release.records import SourceIdentity
from bicorseg.data.sources import SourceFile
from bicorseg.errors import InputError

MatchKey = tuple[tuple[str, str], ...]  # the named groups of a file pattern's match, sorted


@dataclass
class Item:
    """One source image of a split (a tile), with its label file if the split has labels."""

    split: str
    name: str  # output base name, from the release's patch_name
    fields: dict[str, str]
    image: SourceFile
    label: SourceFile | None

    def identity(self) -> SourceIdentity:
        """What a finished tile of this item was made from (a changed source is prepared again)."""
        if self.label is None:
            return SourceIdentity(self.image.rel, self.image.size)
        return SourceIdentity(self.image.rel, self.image.size, self.label.rel, self.label.size)


def _best(candidates: list[SourceFile]) -> SourceFile:
    # Prefer unpacked files over archive members, then the shallowest path: deterministic either way.
    return min(candidates, key=lambda f: (f.archive is not None, f.rel.count("/"), f.rel))


def _short_list(values: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(values[:limit])
    return shown + (f" and {len(values) - limit} more" if len(values) > limit else "")


def _match(
    release: Release, patterns: Iterable[str], files: Iterable[SourceFile]
) -> dict[MatchKey, list[SourceFile]]:
    found: dict[MatchKey, list[SourceFile]] = defaultdict(list)
    compiled = [release.pattern(p) for p in patterns]
    for f in files:
        match = next((m for regex in compiled if (m := regex.search(f.rel))), None)
        if match:
            found[tuple(sorted(match.groupdict().items()))].append(f)
    return found


def plan(
    release: Release,
    variant: BandVariant,
    rules: Sequence[SplitRule],
    files: Sequence[SourceFile],
    sources: str,
) -> tuple[dict[str, list[Item]], dict[str, list[str]], dict[str, list[str]]]:
    """Match source files to the splits: items per split, parts found and not found per split.

    Raises InputError listing every tile the protocol needs that is absent, every image without
    its label and every label without its image.
    """
    images = _match(release, variant.images, files)
    claimed = {id(f) for group in images.values() for f in group}
    rest = [f for f in files if id(f) not in claimed]
    if not images:
        expected = _short_list([*variant.images, *release.archives], 6)
        raise InputError(
            f"{sources}: no image of the {release.name} release found (expected e.g. {expected})"
        )

    # Labels indexed by the names of their fields, so that finding an image's label is a lookup.
    label_index: dict[str, dict[tuple[str, ...], dict[MatchKey, list[SourceFile]]]] = {}
    for role, patterns in release.labels.items():
        label_index[role] = defaultdict(dict)
        for key, group in _match(release, patterns, rest).items():
            label_index[role][tuple(k for k, _ in key)][key] = group

    def label_for(role: str, fields: dict[str, str]) -> SourceFile | None:
        for names, table in label_index[role].items():
            group = table.get(cast(MatchKey, tuple((k, fields.get(k)) for k in names)))
            if group:
                return _best(group)
        return None

    items: dict[str, list[Item]] = {}
    found: dict[str, list[str]] = {}
    not_found: dict[str, list[str]] = {}
    problems: list[str] = []
    for rule in rules:
        selected: list[dict[str, str]] = []
        if rule.tiles:
            by_tile: dict[str, list[MatchKey]] = defaultdict(list)
            for key in images:
                by_tile[dict(key)["tile"]].append(key)
            absent = [t for t in rule.tiles if t not in by_tile]
            if absent:
                problems.append(
                    f"{rule.name}: no image for tile(s) {_short_list(absent)} (expected {' or '.join(variant.images)})"
                )
            for tile in rule.tiles:
                if tile in by_tile:
                    keys = by_tile[tile]
                    best = min(keys, key=lambda k: (_best(images[k]).archive is not None, k))
                    selected.append(dict(best))
        else:
            parts: dict[str, int] = defaultdict(int)
            for key in sorted(images):
                fields = dict(key)
                if all(fields.get(k) in allowed for k, allowed in rule.where.items()):
                    selected.append(fields)
                    parts["/".join(fields[k] for k in rule.where)] += 1
            found[rule.name] = [f"{p} ({n} images)" for p, n in sorted(parts.items())]
            combos: list[list[str]] = [[]]
            for allowed in rule.where.values():
                combos = [[*c, v] for c in combos for v in allowed]
            not_found[rule.name] = ["/".join(c) for c in combos if "/".join(c) not in parts]
            if rule.labels is not None:
                # Labels without their image are as suspicious as images without labels.
                orphans = []
                for names, table in label_index[rule.labels].items():
                    wanted = {tuple((k, f.get(k)) for k in names) for f in selected}
                    orphans += [
                        _best(group).display
                        for key, group in table.items()
                        if key not in wanted
                        and all(dict(key).get(k, v[0]) in v for k, v in rule.where.items())
                    ]
                if orphans:
                    problems.append(
                        f"{rule.name}: {len(orphans)} label(s) without an image: {_short_list(orphans, 5)}"
                    )
        split_items = []
        no_label = []
        for fields in selected:
            image = _best(images[tuple(sorted(fields.items()))])
            label = None
            if rule.labels is not None:
                label = label_for(rule.labels, fields)
                if label is None:
                    no_label.append(fields["tile"] if rule.tiles else image.display)
                    continue
            split_items.append(Item(rule.name, release.patch_name.format(**fields), fields, image, label))
        if no_label:
            what = "tile(s)" if rule.tiles else "image(s)"
            problems.append(
                f"{rule.name}: no {rule.labels} label for {what} {_short_list(no_label)} "
                f"(expected {' or '.join(release.labels[rule.labels or ''])})"
            )
        written = [item.name for item in split_items]
        duplicates = sorted({n for n in written if written.count(n) > 1})
        if duplicates:
            problems.append(f"{rule.name}: several images would be written as {_short_list(duplicates, 5)}")
        items[rule.name] = split_items
    if problems:
        raise InputError(f"{sources}: the {release.name} release is incomplete: " + "; ".join(problems))
    if not any(items.values()):
        raise InputError(
            f"{sources}: none of the requested splits ({', '.join(r.name for r in rules)}) of {release.name} "
            "has any image"
        )
    return items, found, not_found
