"""Units of work across every input of a run: the plan, the parts and the mosaic.

A run is planned as units: the blocks of each input's global grid (:class:`.engine.Block`), in
input order, then row-major; a unit's bytes depend only on the unit (:mod:`.engine`), so any
partition of the units gives the same outputs. What partitioned runs keep in ``OUT/bicorseg_parts/``
(``plan.json``, ``<i>/<unit>_<kind>.tif``, ``run.lock``), when a part is kept, and what
:func:`mosaic` assembles, removes and refuses is in ``docs/prediction.md`` (Scaling out). Here:
:class:`RunPlan` (the run's identity, created once, atomically, by whichever process comes first),
:class:`PartStore` (the parts folder: paths made from constants and numbers only, files removed by
the names this module gives them) and :func:`mosaic`. A plan is read as a file anyone could have
edited: names are checked to be plain file names before a path is made of them.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path, PurePath
from typing import Any

from rasterio._err import CPLE_BaseError  # what some GDAL reads raise: not a RasterioError
from rasterio.errors import RasterioError
from rasterio.windows import Window

from bicorseg import raster_access, typedconfig
from bicorseg.atomic import ensure_writable, find_temps, is_plain_name, remove_stale_temps, temp_name
from bicorseg.errors import ConfigError, InputError, OutputError, first_line
from bicorseg.inference.engine import MIN_BLOCK, Block, block_grid
from bicorseg.inference.raster_io import Georeference
from bicorseg.inference.tiling import output_size
from bicorseg.inference.writers import (
    MapLayout,
    existing_outputs,
    output_tags,
    read_written,
    refuse_existing,
    writing_maps,
)

PARTS_FOLDER = "bicorseg_parts"
PLAN_NAME = "plan.json"
LOCK_NAME = "run.lock"
PLAN_LIMIT = 256 * 2**20  # bytes: a larger plan.json is not one bicorseg wrote
MAX_UNITS = 10**7  # units of one run: a raster of 1.6 million pixels a side in blocks of 512 px
PLAN_FORMAT = "bicorseg-plan"
PLAN_VERSION = 1
PART_ROWS = 256  # rows copied at a time between parts and outputs
SHARD_VARIABLES = ("SLURM_ARRAY_TASK_ID", "JOB_COMPLETION_INDEX", "AWS_BATCH_JOB_ARRAY_INDEX")


# --- shards -----------------------------------------------------------------------------------------


def parse_shard(text: str, environ: Mapping[str, str] | None = None) -> tuple[int, int]:
    """``"i/N"`` -> ``(i, N)`` with ``0 <= i < N``; ``"auto/N"`` takes ``i`` from the first of
    :data:`SHARD_VARIABLES` that is set (SLURM arrays, Kubernetes indexed jobs, AWS Batch arrays)."""
    environ = os.environ if environ is None else environ
    index, sep, count = (part.strip() for part in str(text).partition("/"))
    if not sep or not count.isdigit() or int(count) < 1 or not (index == "auto" or index.isdigit()):
        raise ConfigError(f"must be i/N or auto/N with N >= 1 (e.g. 0/4), got {text!r}", key="shard")
    n = int(count)
    if index != "auto":
        if int(index) >= n:
            raise ConfigError(
                f"the index of {text} must be below the shard count (0 to {n - 1})", key="shard"
            )
        return int(index), n
    found = [(name, environ[name]) for name in SHARD_VARIABLES if environ.get(name, "").strip()]
    if not found:
        raise ConfigError(f"auto/{n}: none of {', '.join(SHARD_VARIABLES)} is set", key="shard")
    name, value = found[0]
    if not value.strip().isdigit() or int(value) >= n:
        raise ConfigError(f"auto/{n}: {name}={value!r} is not a shard index below {n}", key="shard")
    return int(value), n


# --- the plan ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedFile:
    """One input of a run, as the plan records it."""

    name: str  # the input's file name (the outputs' bicorseg_input tag)
    input: str  # the path it was given as (for messages; not part of the identity)
    height: int
    width: int
    size: int | None  # bytes, when known
    picture: bool
    geo: Georeference
    rescale: str | None = None  # the outputs' bicorseg_rescale tag (the map of its values), if any

    def __post_init__(self) -> None:
        # the outputs are OUT/<stem><suffix>: a name with a folder part would put them elsewhere
        if not is_plain_name(self.name):
            raise ValueError(f"{self.name!r} is not the name of a file")
        if not (0 < self.height < 2**31 and 0 < self.width < 2**31):
            raise ValueError(f"{self.name}: {self.width} x {self.height} px is not a raster size")

    @property
    def stem(self) -> str:
        return PurePath(self.name).stem


@dataclass(frozen=True)
class RunPlan:
    """The identity and the units of a partitioned run (see the module docstring)."""

    checkpoint_sha256: str
    settings: str
    block: int
    batch_size: int
    layout: MapLayout
    tags: dict[str, dict[str, str]]  # per output kind, without the input's name
    files: tuple[PlannedFile, ...]
    shards: int | None = None  # N of --shard i/N; None: a run that computes every unit itself

    def blocks(self, file: PlannedFile) -> list[Block]:
        """The blocks of one input, row-major (the same grid as :class:`.engine.SlidingWindow`'s)."""
        return block_grid(file.height, file.width, self.block)

    def units(self) -> list[tuple[int, Block]]:
        """Every unit of the run, (input index, block), in the order that round-robin shards split."""
        return [(i, block) for i, file in enumerate(self.files) for block in self.blocks(file)]

    def shard_of(self, index: int) -> int | None:
        """The shard that computes the unit at position ``index`` of :meth:`units` (round-robin)."""
        return None if self.shards is None else index % self.shards

    def to_dict(self) -> dict[str, Any]:
        return typedconfig.to_plain(asdict(self))

    def identity(self) -> dict[str, Any]:
        """What must be equal for parts to be mixed (the checkpoint's path and inputs' paths are not)."""
        identity = self.to_dict()
        identity["tags"] = {
            kind: {k: v for k, v in t.items() if k != "bicorseg_checkpoint"} for kind, t in self.tags.items()
        }
        identity["files"] = [{k: v for k, v in f.items() if k != "input"} for f in identity["files"]]
        return identity

    @property
    def plan_id(self) -> str:
        text = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    def to_json(self) -> str:
        header = {"format": PLAN_FORMAT, "version": PLAN_VERSION, "plan_id": self.plan_id}
        return json.dumps(header | self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str, where: Path) -> RunPlan:
        try:
            data = json.loads(text)
            header = {key: data.pop(key, None) for key in ("format", "version", "plan_id")}
            if (header["format"], header["version"]) != (PLAN_FORMAT, PLAN_VERSION):
                raise ValueError(f"not a {PLAN_FORMAT} version {PLAN_VERSION}")
            plan = typedconfig.build(cls, data, complete=True)
            plan.check()
            return plan
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise InputError(f"{where} is not a readable bicorseg plan ({first_line(error)})") from error

    def check(self) -> None:
        """Raise ValueError unless this could be a plan bicorseg wrote (for a plan read from a file)."""
        if self.block < MIN_BLOCK or self.batch_size < 1 or (self.shards is not None and self.shards < 1):
            raise ValueError(f"block {self.block}, batch size {self.batch_size}, shards {self.shards}")
        stems = [f.stem.casefold() for f in self.files]
        if len(set(stems)) != len(stems):
            raise ValueError("two inputs with one output name")
        units = sum(output_size(f.height, self.block) * output_size(f.width, self.block) for f in self.files)
        if units > MAX_UNITS:
            raise ValueError(f"{units} units (at most {MAX_UNITS})")

    def difference(self, other: RunPlan) -> str:
        """In words, how ``other`` (a new run) differs from this plan."""
        if other.checkpoint_sha256 != self.checkpoint_sha256:
            return f"another checkpoint (sha256 {self.checkpoint_sha256[:12]}; now {other.checkpoint_sha256[:12]})"
        if other.settings != self.settings:
            return f"other settings ({self.settings}; now {other.settings})"
        if other.layout != self.layout:
            return f"other outputs ({'+'.join(self.layout.kinds)}; now {'+'.join(other.layout.kinds)})"
        if (other.block, other.batch_size) != (self.block, self.batch_size):
            return f"another block or batch size ({self.block}/{self.batch_size}; now {other.block}/{other.batch_size})"
        names, others = [f.name for f in self.files], [f.name for f in other.files]
        if names != others:
            return f"other inputs ({_names(names)}; now {_names(others)})"
        for mine, theirs in zip(self.files, other.files):
            if mine != theirs and (mine.height, mine.width, mine.size) != (
                theirs.height,
                theirs.width,
                theirs.size,
            ):
                return f"another {mine.name} ({mine.width} x {mine.height} px, {mine.size} bytes; now {theirs.width} x {theirs.height} px, {theirs.size} bytes)"
        if other.shards != self.shards:
            planned = f"{self.shards} shards" if self.shards else "a run without shards"
            return f"another shard count (planned for {planned}; now {other.shards or 'no'} shards: their units would overlap)"
        return "another version or georeferencing"


def _names(names: Sequence[str], shown: int = 3) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


# --- parts -------------------------------------------------------------------------------------------


class PartStore:
    """The parts folder of an output folder (module docstring): input ``i``'s parts are in the folder
    ``i``; files are removed by their names, never a folder with its content, so nothing outside the
    parts folder is ever removed."""

    def __init__(self, out_dir: str | os.PathLike) -> None:
        self.out_dir = Path(out_dir)
        self.root = self.out_dir / PARTS_FOLDER
        self.plan_path = self.root / PLAN_NAME
        self.lock_path = self.root / LOCK_NAME

    def folder(self, index: int) -> Path:
        return self.root / str(index)

    def folders(self, plan: RunPlan) -> list[Path]:
        """The parts folder and the folder of each input's parts."""
        return [self.root, *(self.folder(i) for i in range(len(plan.files)))]

    def load(self) -> RunPlan | None:
        """The plan in the folder, or None."""
        try:
            if self.plan_path.stat().st_size > PLAN_LIMIT:
                raise InputError(
                    f"{self.plan_path} is larger than {PLAN_LIMIT >> 20} MiB: not a bicorseg plan"
                )
            text = self.plan_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"cannot read {self.plan_path}: {first_line(error)}") from error
        return RunPlan.from_json(text, self.plan_path)

    @contextmanager
    def lock(self, shared: bool = False) -> Iterator[None]:
        """Hold the parts folder while the block runs: shards share it; a run that assembles and
        removes parts (``predict`` without a shard, ``mosaic``) holds it alone. Taken at once or
        refused in one line; the kernel lets go of it when a process ends, however it ends."""
        _own_folder(self.root, create=False)
        try:
            import fcntl
        except ImportError:  # no flock on this platform: runs are not guarded against each other
            yield
            return
        while True:
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                handle = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise OutputError(f"cannot write {self.root}: {error.strerror or error}") from None
            try:
                fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(handle)
                raise OutputError(
                    f"{self.root} is in use by another run over {self.out_dir} (predict with --devices, "
                    "--executor ray or --shard, or mosaic): wait until it ends, or write into another folder"
                ) from None
            except OSError:  # a file system without locks: go on unguarded
                pass
            with suppress(OSError):
                if os.stat(self.lock_path).st_ino == os.fstat(handle).st_ino:
                    break
            os.close(handle)  # a run that just finished removed that file: take the new one
        try:
            yield
        finally:
            os.close(handle)

    def claim(self, plan: RunPlan, any_shards: bool = False) -> RunPlan:
        """Join the run of this folder: create its plan (atomically, if absent) or check it is ``plan``'s;
        then check that every folder of parts there can be written.

        ``any_shards``: a run that computes every unit itself joins a plan of any shard count.
        """
        try:
            plan.check()
        except ValueError as error:
            raise ConfigError(f"the run would have {error}: give a larger block", key="block") from None
        existing = self.load()
        if existing is None:
            self.root.mkdir(parents=True, exist_ok=True)
            temp = self.root / temp_name(self.plan_path)
            try:
                temp.write_text(plan.to_json() + "\n", encoding="utf-8")
                os.link(temp, self.plan_path)  # fails if another process created the plan first
                existing = plan
            except FileExistsError:
                existing = self.load()
            except OSError as error:
                raise OutputError(f"cannot write {self.plan_path}: {error.strerror or error}") from error
            finally:
                with suppress(OSError):
                    temp.unlink()
        assert existing is not None
        if any_shards and existing.shards != plan.shards:
            plan = replace(plan, shards=existing.shards)
        if existing.plan_id != plan.plan_id:
            raise OutputError(
                f"{self.plan_path} plans a run with {existing.difference(plan)}: its parts cannot be mixed "
                f"with this run's; finish that run (bicorseg mosaic {self.out_dir}) or remove {self.root}"
            )
        self.check_writable(existing)
        return existing

    def check_writable(self, plan: RunPlan) -> None:
        """Raise :class:`OutputError` unless the parts folder and each of its input folders can be written."""
        for folder in self.folders(plan):
            if folder == self.root or folder.exists():
                ensure_writable(folder, folder=True)

    def targets(self, plan: RunPlan, index: int, block: Block) -> dict[str, Path]:
        folder = self.folder(index)
        return {kind: folder / f"{block.key}_{kind}.tif" for kind in plan.layout.encoded}

    def done(self, plan: RunPlan, index: int, block: Block) -> bool:
        """Whether every part of a unit is there, whole, from this plan (else the unit is computed again)."""
        for kind, path in self.targets(plan, index, block).items():
            try:
                tags, shape, bands = read_written(path)
            except Exception:  # whatever the reader raises, the part cannot be used
                return False
            if (tags.get("bicorseg_plan"), shape, bands) != (plan.plan_id, (block.height, block.width),
                                                             plan.layout.bands(kind)):  # fmt: skip
                return False
        return True

    @contextmanager
    def writing(self, plan: RunPlan, index: int, block: Block) -> Iterator[Callable]:
        """A sink ``write(y0, x0, arrays)`` (output coordinates) filling the part of one unit; the
        part appears when the block ends without error."""
        _own_folder(self.folder(index))
        targets = self.targets(plan, index, block)
        unit = {"bicorseg_plan": plan.plan_id, "bicorseg_unit": f"{plan.files[index].name}:{block.key}"}
        shape, origin = (block.height, block.width), (block.y0, block.x0)
        with writing_maps(targets, plan.layout, None, shape, dict.fromkeys(targets, unit), origin) as sink:
            yield sink

    def copy_into(self, plan: RunPlan, index: int, block: Block, sink: Callable) -> None:
        """Hand the part of a unit to ``sink(y0, x0, arrays)`` in strips of :data:`PART_ROWS` rows."""
        targets = self.targets(plan, index, block)
        with ExitStack() as stack:
            parts = {}
            for kind, path in targets.items():
                with self._damaged(plan, index, block, path):
                    parts[kind] = stack.enter_context(raster_access.open_raster(path))
                if parts[kind].tags().get("bicorseg_plan") != plan.plan_id:
                    raise InputError(f"part {path} belongs to another run than {self.plan_path}")
            for r in range(0, block.height, PART_ROWS):
                window = Window(0, r, block.width, min(PART_ROWS, block.height - r))
                arrays = {}
                for kind, part in parts.items():
                    with self._damaged(plan, index, block, targets[kind]):
                        arrays[kind] = (
                            part.read(1, window=window) if kind == "class" else part.read(window=window)
                        )
                sink(block.y0 + r, block.x0, arrays)

    @contextmanager
    def _damaged(self, plan: RunPlan, index: int, block: Block, path: Path) -> Iterator[None]:
        """Turn a failed read of the part ``path`` into one line naming it and the remedy."""
        try:
            yield
        except (RasterioError, CPLE_BaseError, OSError, InputError) as error:
            shard = plan.shard_of(plan.units().index((index, block)))  # a failure: the time does not matter
            again = "the predict command" if shard is None else f"shard {shard}/{plan.shards}"
            raise InputError(
                f"cannot read the part {path} ({first_line(error.__cause__ or error)}): delete it and run "
                f"{again} again to compute that unit anew"
            ) from error

    def remove(self, plan: RunPlan, index: int) -> None:
        """Delete the parts of input ``index`` (by their names), then its folder if nothing else is in it."""
        folder = self.folder(index)
        if folder.is_symlink():
            return
        for block in plan.blocks(plan.files[index]):
            for path in self.targets(plan, index, block).values():
                path.unlink(missing_ok=True)
        remove_stale_temps(folder)
        with suppress(OSError):
            folder.rmdir()

    def remove_if_finished(self, plan: RunPlan) -> None:
        """Delete the plan, the lock and the parts folder once no process writes there any more and
        nothing else is in it."""
        if any(not t.stale for folder in self.folders(plan) for t in find_temps(folder)):
            return  # another process of this run is still writing here
        for index in range(len(plan.files)):
            self.remove(plan, index)
        self.plan_path.unlink(missing_ok=True)
        self.lock_path.unlink(missing_ok=True)
        remove_stale_temps(self.root)
        with suppress(OSError):
            self.root.rmdir()

    def clean_stale(self, plan: RunPlan) -> None:
        """Delete the temporary files that ended processes left in the parts folder."""
        for folder in self.folders(plan):
            remove_stale_temps(folder)


def _own_folder(folder: Path, create: bool = True) -> None:
    """Refuse a parts folder that is a symbolic link; create it (``create``) if it is not there."""
    if folder.is_symlink():
        raise OutputError(f"{folder} is a symbolic link: bicorseg keeps parts only in a folder of its own")
    try:
        if create:
            folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"cannot write {folder}: {error.strerror or error}") from None


# --- assembling ----------------------------------------------------------------------------------------


def outputs_done(plan: RunPlan, file: PlannedFile, out_dir: Path) -> tuple[bool, dict[Path, str]]:
    """Whether the outputs of ``file`` exist and verify against the plan, and why others do not."""
    targets, shape = plan.layout.targets(out_dir, file.stem, file.picture), (file.height, file.width)
    return existing_outputs(targets, file.name, shape, plan.layout, plan.checkpoint_sha256,
                            lambda kind: plan.tags[kind]["bicorseg_settings"])  # fmt: skip


def assemble(store: PartStore, plan: RunPlan, index: int) -> None:
    """Write the outputs of input ``index`` from its parts (every unit must be there)."""
    file = plan.files[index]
    targets = plan.layout.targets(store.out_dir, file.stem, file.picture)
    tags = output_tags(plan.tags, file.name, file.rescale)
    with writing_maps(targets, plan.layout, file.geo, (file.height, file.width), tags) as sink:
        for block in plan.blocks(file):
            store.copy_into(plan, index, block, sink)
    store.remove(plan, index)


@dataclass
class MosaicReport:
    """What :func:`mosaic` did: inputs assembled now, assembled before, and the units still missing."""

    assembled: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    missing: dict[str, list[tuple[Block, int | None]]] = field(default_factory=dict)  # name -> (unit, shard)
    total_units: dict[str, int] = field(default_factory=dict)

    def missing_line(self) -> str:
        """One line naming the missing units of each incomplete input (and their shards)."""
        parts = []
        for name, units in self.missing.items():
            keys = [b.key for b, _ in units]
            shards = sorted({s for _, s in units if s is not None})
            owed = f"; shard(s) {', '.join(map(str, shards))}" if shards else ""
            missing = f"{len(keys)} of {self.total_units[name]} units missing ({_names(keys, 6)}{owed})"
            parts.append(f"{name}: {missing}")
        return "; ".join(parts)


def mosaic(out_dir: str | os.PathLike, overwrite: bool = False, progress: Any = None) -> MosaicReport:
    """Assemble the parts in ``out_dir`` (see the module docstring); outputs of another run that are
    already there are refused unless ``overwrite``."""
    store = PartStore(out_dir)
    nothing = InputError(f"{store.out_dir} holds no parts to assemble (no {PARTS_FOLDER}/{PLAN_NAME})")
    if store.load() is None:
        raise nothing
    with store.lock():
        plan = store.load()
        if plan is None:  # assembled by a run that ended while this one started
            raise nothing
        store.check_writable(plan)
        report = MosaicReport()
        position = {(i, b.key): g for g, (i, b) in enumerate(plan.units())}
        todo, problems = [], {}
        for index, file in enumerate(plan.files):
            report.total_units[file.name] = len(plan.blocks(file))
            done, bad = outputs_done(plan, file, store.out_dir)
            problems.update(bad)
            if done and not overwrite:
                report.already.append(file.name)
                continue
            missing = [b for b in plan.blocks(file) if not store.done(plan, index, b)]
            if missing:
                report.missing[file.name] = [(b, plan.shard_of(position[(index, b.key)])) for b in missing]
            else:
                todo.append(index)
        refuse_existing(problems, overwrite)
        store.clean_stale(plan)
        if progress is not None:
            progress.start(f"mosaic of {len(todo)} file(s)", len(todo))
        for index in todo:
            assemble(store, plan, index)
            report.assembled.append(plan.files[index].name)
            if progress is not None:
                progress.advance(1)
        if not report.missing:
            store.remove_if_finished(plan)
    return report
