"""Run folders you can trust: a manifest of what a run did, a lock, and a checker.

Why: a continental run takes hours over thousands of tiles on flaky networks. Afterwards a user must
be able to tell a complete run from a partial one, rerun only what failed, and prove that the files
on disk are the ones the run wrote. Every stage that writes a run folder does so through
:class:`RunContext`::

    with RunContext(out_dir, "detect", params={...}, inputs={"model": path}) as run:
        run.plan(tile_ids)                       # every tile starts "pending"
        for tid in run.todo(tile_ids):           # skips tiles already done (resume)
            try:
                path = write_tile(tid)           # written with minewatch.atomic
            except TileError as e:
                run.tile_failed(tid, e)          # recorded, the run goes on
            else:
                run.tile_done(tid, [path])       # checksummed, recorded
        run.add_output(out_dir / "summary.json")

What lands in the folder:

* ``manifest.json`` — versions (minewatch, Python, key libraries, GDAL), command line, inputs (files
  and folders with SHA-256), parameters, per-tile status (``pending``/``done``/``failed`` + error
  line), SHA-256 and size of every output, and a history of the runs that wrote the folder. It is
  rewritten atomically (never half-written) at most every few seconds and when the run ends.
* ``.minewatch-journal.jsonl`` — one line appended per tile event between two manifest rewrites, so
  that a run killed with SIGKILL loses no finished tile; it is folded into the manifest by the next
  run (or read by :func:`load_manifest`) and emptied after each rewrite. Appends are O(1), where
  rewriting the manifest after every tile would cost O(tiles²) on a continental run.
* ``.minewatch.lock`` (+ ``.minewatch.lock.json`` naming the holder) — an OS file lock held for the
  whole run: a second run on the same folder fails at once with a one-line message. The kernel
  drops the lock when the holder dies (even by SIGKILL), so there are no stale locks to clean up
  (local filesystems; ``flock`` over NFS depends on the server).

:func:`verify_run` checks a finished folder against its manifest (``minewatch verify``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import os
import platform
import socket
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import TracebackType
from typing import Any

from minewatch import __version__
from minewatch.atomic import sha256_file, write_json_atomic
from minewatch.errors import MinewatchError

MANIFEST = "manifest.json"
JOURNAL = ".minewatch-journal.jsonl"
LOCK = ".minewatch.lock"
LOCK_INFO = ".minewatch.lock.json"
BOOKKEEPING = frozenset({MANIFEST, JOURNAL, LOCK, LOCK_INFO})
"""Files of the run machinery itself: never outputs, never flagged as unlisted."""
SIDECAR_SUFFIX = ".manifest.json"
FILE_LOCK_SUFFIX = ".minewatch.lock"
"""A single-file run (``map.html``) keeps its manifest beside it: ``map.html.manifest.json``."""
MANIFEST_FORMAT = 1
PENDING, DONE, FAILED, EMPTY = "pending", "done", "failed", "empty"
"""``empty``: a final state for a tile with nothing to compute (no scene, no data); never retried."""
FINAL = frozenset({DONE, EMPTY})
TEMP_MARK = ".tmp-"
"""Temporary files from :mod:`minewatch.atomic` are named ``.<stem>.tmp-<pid><suffix>``."""

KEY_LIBRARIES = (
    "numpy", "pandas", "rasterio", "shapely", "pyproj", "geopandas", "pyarrow",
    "onnxruntime", "xarray", "odc-stac", "pystac", "pystac-client", "dask", "torch",
)  # fmt: skip
DIR_HASH_LIMIT = 512 << 20
"""Folders of inputs up to this many bytes are hashed file by file; larger ones by listing."""


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def is_temp_name(name: str) -> bool:
    """True for the temporary names :func:`minewatch.atomic.atomic_path` writes (``.x.tmp-123.tif``)."""
    return name.startswith(".") and TEMP_MARK in name


# --------------------------------------------------------------------------------------------------
# Environment and inputs: pure-ish helpers
# --------------------------------------------------------------------------------------------------


def environment_versions(load_gdal: bool = True) -> dict[str, str]:
    """Versions of minewatch, Python, GDAL and the key libraries that shape a run's numbers.

    With ``load_gdal=False`` GDAL is read only from the bindings the run already loaded (rasterio's
    and pyogrio's bundle their own GDAL, and a run used the one it imported): importing rasterio
    only to ask would cost a map or table command up to a second (single-unit runs pass False).
    """
    out = {"minewatch": __version__, "python": platform.python_version(), "platform": platform.platform()}
    out.update(_library_versions())
    if load_gdal:
        try:
            import rasterio  # noqa: F401
        except Exception:  # pragma: no cover - a broken GDAL install must not stop a run from recording
            pass
    rio = sys.modules.get("rasterio")
    if rio is not None and getattr(rio, "__gdal_version__", None):
        out["gdal"] = str(rio.__gdal_version__)
    ogr = sys.modules.get("pyogrio")
    if ogr is not None and getattr(ogr, "__gdal_version_string__", None):
        out["gdal_pyogrio"] = str(ogr.__gdal_version_string__)
    return out


@functools.lru_cache(maxsize=1)
def _library_versions() -> dict[str, str]:
    out = {}
    for name in KEY_LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def describe_input(value: Any, exclude: Iterable[str | os.PathLike[str]] = ()) -> dict[str, Any]:
    """How an input goes into the manifest: files and folders with checksums, anything else as given.

    Folders up to :data:`DIR_HASH_LIMIT` get a digest over (relative path, SHA-256) of every file; larger
    ones (a folder of continental composites) a digest over (relative path, size, mtime), marked as
    such, so that recording inputs never costs as much as the run itself. Paths under ``exclude``
    (the run's own folder or files, when ``--out`` lies inside the input folder) are left out, so
    that the run's own writing never changes its input's digest and the run can always resume.
    Temporary files and the lock files of the run machinery are left out too.
    """
    if isinstance(value, (str, os.PathLike)) and not _looks_like_url(str(value)):
        p = Path(value)
        if p.is_file():
            return {"path": str(p.resolve()), "size": p.stat().st_size, "sha256": sha256_file(p)}
        if p.is_dir():
            skip = [Path(os.path.realpath(e)) for e in exclude]
            files = sorted(
                f for f in _walk_files(p, skip) if not is_temp_name(f.name) and f.name not in (LOCK, LOCK_INFO, JOURNAL)
            )
            total = sum(f.stat().st_size for f in files)
            h = hashlib.sha256()
            by_content = total <= DIR_HASH_LIMIT
            for f in files:
                rel = f.relative_to(p).as_posix()
                st = f.stat()
                h.update(f"{rel}\0{sha256_file(f) if by_content else f'{st.st_size}:{st.st_mtime_ns}'}\n".encode())
            return {
                "path": str(p.resolve()),
                "files": len(files),
                "size": total,
                "sha256": h.hexdigest(),
                "digest": "content" if by_content else "listing",
            }
    if isinstance(value, os.PathLike):
        value = str(value)
    return {"value": value}


def _looks_like_url(s: str) -> bool:
    return "://" in s


def _walk_files(root: Path, skip: list[Path]) -> Iterable[Path]:
    """Every file below ``root``, not descending into folders (or files) in ``skip`` (real paths)."""
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        real = Path(os.path.realpath(d))
        dirnames[:] = sorted(n for n in dirnames if real / n not in skip and not is_temp_name(n))
        for n in filenames:
            if real / n not in skip:
                yield d / n


def _jsonable(obj: Any) -> Any:
    """Parameters as they will read back from JSON (tuples → lists, paths → str), for comparison."""
    return json.loads(json.dumps(obj, default=str))


# --------------------------------------------------------------------------------------------------
# Output safety: outputs never replace, delete or lie over inputs
# --------------------------------------------------------------------------------------------------


def abs_path(path: str | os.PathLike[str]) -> Path:
    """An absolute path as the user meant it (``~`` expanded, relative to the working directory).

    Resolved at the CLI edge so that nothing downstream depends on the working directory (Dask
    workers run elsewhere; a library that changes folder must not move the output).
    """
    return Path(os.path.abspath(os.path.expanduser(os.fspath(path))))


def abs_local(value: str | os.PathLike[str] | None) -> str | None:
    """``value`` made absolute when it is a local path that exists (a catalog file, a model
    folder); URLs and names (``earth-search``, ``default``) are returned unchanged."""
    if value is None:
        return None
    s = os.fspath(value)
    if _looks_like_url(s) or not s or not os.path.exists(os.path.expanduser(s)):
        return s
    return str(abs_path(s))


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def input_paths(inputs: Mapping[str, Any]) -> dict[str, Path]:
    """The local files and folders among a run's inputs, by name, as real (symlink-free) paths.

    Lists and tuples of paths are flattened (``layer``, ``layer2``, …); URLs and plain values are
    not paths. Paths that do not exist are kept (a missing input is the reader's error to report).
    """
    out: dict[str, Path] = {}
    for name, v in flatten_inputs(inputs).items():
        if isinstance(v, str) and v and not _looks_like_url(v):
            out[name] = _real(v)
    return out


def flatten_inputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Inputs one value per name: lists become ``name``, ``name2``, …; ``None`` is dropped."""
    out: dict[str, Any] = {}
    for name, value in inputs.items():
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        for i, v in enumerate(x for x in values if x is not None):
            out[name if i == 0 else f"{name}{i + 1}"] = os.fspath(v) if isinstance(v, os.PathLike) else v
    return out


def _run_command(folder: Path) -> str | None:
    """The command of the run whose manifest is in ``folder``; None when there is none or it is
    unreadable (the run machinery then refuses to resume, and deletes nothing it cannot name)."""
    m = folder / MANIFEST
    if not m.is_file():
        return None
    try:
        return str(json.loads(m.read_text(encoding="utf-8")).get("command")) or None
    except (OSError, ValueError, AttributeError):
        return None


def check_output_safety(
    command: str,
    out: str | os.PathLike[str],
    inputs: Mapping[str, Any],
    *,
    folder: bool = True,
    writes: Iterable[str] = (),
) -> None:
    """Refuse, before anything is written, an output that is, would replace, or lies over an input.

    The one rule for every command that writes (raises :class:`MinewatchError`, exit 2):

    * the output (folder or file) is one of the inputs, or an input folder is inside the output file path;
    * an output folder that holds an input at a name the command writes (``writes``: its top-level
      output names, e.g. ``zones.geojson`` for ``impacts``) — the input would be replaced;
    * an output folder that holds another command's run (its ``manifest.json``): a run folder
      belongs to one command. Runs may *nest*: give a new folder inside it (``det/postprocess``);
      ``minewatch verify`` checks nested runs in turn;
    * an output folder that is a file, or an output file that is a folder.

    ``--out`` *inside* an input folder is allowed (the run's own folder is left out of the input's
    digest, see :func:`describe_input`).
    """
    target = abs_path(out)
    real = _real(target)
    ins = input_paths(inputs)
    kind = "folder" if folder else "file"
    for name, p in ins.items():
        if real == p:
            raise MinewatchError(target, f"is also the input '{name}'; outputs never replace inputs: choose another output {kind}")
    if folder:
        if target.exists() and not target.is_dir():
            raise MinewatchError(target, "exists and is not a folder; give an output folder")
        names = set(writes)
        for name, p in ins.items():
            if _is_within(p, real) and p != real:
                top = p.relative_to(real).parts[0]
                if top in names or top in BOOKKEEPING:
                    raise MinewatchError(target, f"holds the input '{name}' ({p}) where '{command}' writes its output '{top}': it would be replaced; write the outputs to a folder of their own")
        other = _run_command(target) if target.is_dir() else None
        if other is not None and other != command:
            raise MinewatchError(target, f"folder holds a '{other}' run, not '{command}'; a run never writes into another command's run folder: give a new folder (runs may nest, e.g. {target / command})")
    else:
        if target.is_dir():
            raise MinewatchError(target, "is a folder: give a file name for this output")
        for name, p in ins.items():
            if _is_within(real, p) and p.is_file():
                raise MinewatchError(target, f"lies inside the input file '{name}'")


# --------------------------------------------------------------------------------------------------
# The lock
# --------------------------------------------------------------------------------------------------


class RunLock:
    """A non-blocking, exclusive lock on a run folder; the failure message names the holder."""

    def __init__(self, run_dir: str | os.PathLike[str], name: str = LOCK) -> None:
        from filelock import FileLock

        self.run_dir = Path(run_dir)
        self.name = name
        self.info_path = self.run_dir / (LOCK_INFO if name == LOCK else name + ".json")
        self._lock = FileLock(str(self.run_dir / name), timeout=0)

    def acquire(self, command: str = "") -> None:
        from filelock import Timeout

        if self.run_dir.exists() and not self.run_dir.is_dir():
            raise MinewatchError(self.run_dir, "exists and is not a folder; give an output folder")
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise MinewatchError(self.run_dir, f"cannot create the output folder ({e.strerror or e})") from None
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise MinewatchError(self.run_dir, f"output folder is in use by another minewatch run ({self.holder()}); wait for it to finish or choose another output folder") from None
        except OSError as e:
            raise MinewatchError(self.run_dir / self.name, f"cannot create the run lock ({e.strerror or e}): the output folder must be writable") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now(), "command": command}
        try:
            write_json_atomic(self.info_path, info)
        except OSError as e:
            self._lock.release()
            raise output_error(e, self.info_path) from None

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()

    def holder(self) -> str:
        """Who holds the lock, as one phrase (best effort: the holder writes it just after locking)."""
        try:
            info = json.loads(self.info_path.read_text())
            what = f"'{info['command']}' " if info.get("command") else ""
            return f"{what}pid {info['pid']} on {info['host']}, started {info['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "holder unknown"

    def is_held_elsewhere(self) -> bool:
        """True when another process holds the lock right now (probes without keeping it).

        Opens the lock file read-only and never creates it, so that an archived run on a read-only
        disk (or a folder the user may not write) can still be verified. ``flock`` works on a
        read-only descriptor.
        """
        path = self.run_dir / self.name
        if not path.exists():
            return False
        if self._lock.is_locked:  # held by this very process
            return False
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: fall back to the library's probe
            from filelock import Timeout

            try:
                self._lock.acquire(timeout=0)
            except Timeout:
                return True
            except OSError:
                return False
            self._lock.release()
            return False
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        except OSError:
            return False
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


# --------------------------------------------------------------------------------------------------
# Manifest state: plain dicts so the file is the schema
# --------------------------------------------------------------------------------------------------


def _apply_event(m: dict[str, Any], ev: Mapping[str, Any]) -> None:
    """Fold one journal event into a manifest dict (idempotent: replaying twice changes nothing)."""
    kind = ev.get("ev")
    if kind == "tile":
        tiles = m.setdefault("tiles", {})
        entry = {"status": ev["status"], "updated": ev.get("t")}
        if ev.get("error"):
            entry["error"] = ev["error"]
        if ev.get("outputs") is not None:
            entry["outputs"] = sorted(ev["outputs"])
        tiles[ev["id"]] = entry
        for rel, rec in (ev.get("outputs") or {}).items():
            m.setdefault("outputs", {})[rel] = dict(rec, tile=ev["id"])
    elif kind == "output":
        m.setdefault("outputs", {})[ev["path"]] = {k: v for k, v in ev.items() if k in ("sha256", "size", "tile")}
    elif kind == "plan":
        tiles = m.setdefault("tiles", {})
        for tid in ev["ids"]:
            tiles.setdefault(tid, {"status": PENDING})
    elif kind == "status":
        m["status"] = ev["status"]
        if m.get("history"):
            m["history"][-1].update({k: v for k, v in ev.items() if k in ("status", "finished", "error")})


def _read_journal(run_dir: Path) -> list[dict[str, Any]]:
    """Journal events in order; a torn last line (killed mid-append) is ignored."""
    path = run_dir / JOURNAL
    if not path.exists():
        return []
    events = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            ev = json.loads(line)
        except ValueError:
            continue
        if isinstance(ev, dict):
            events.append(ev)
    return events


def load_manifest(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a run folder with any not-yet-folded journal events applied.

    Raises :class:`MinewatchError` when the folder has no manifest or it is not valid JSON.
    """
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST
    if not path.exists():
        raise MinewatchError(run_dir, f"not a minewatch run folder: {MANIFEST} missing")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise MinewatchError(path, f"manifest is not valid JSON ({e})") from None
    if not isinstance(m, dict) or "minewatch_manifest" not in m:
        raise MinewatchError(path, "not a minewatch run manifest")
    for ev in _read_journal(run_dir):
        _apply_event(m, ev)
    return m


class RunContext:
    """Record a run in its output folder: lock, manifest, per-tile status, output checksums.

    Opening a folder that already holds a run of the same command with the same parameters and
    inputs *resumes* it: tiles done stay done (:meth:`todo` skips them), failed and pending ones are
    offered again. Different parameters or inputs are refused (mixing them would produce a folder
    that is silently half one run and half another) unless ``fresh=True``, which deletes the old
    run's outputs first. Stray temporary files left by a killed run are removed on entry; that is
    safe because the lock guarantees no other writer.

    Thread-safe: a Dask or thread-pool driver may call :meth:`tile_done` from worker threads.
    """

    def __init__(
        self,
        out_dir: str | os.PathLike[str],
        command: str,
        params: Mapping[str, Any] | None = None,
        inputs: Mapping[str, Any] | None = None,
        *,
        argv: list[str] | None = None,
        fresh: bool = False,
        flush_interval_s: float = 5.0,
        writes: Iterable[str] = (),
    ) -> None:
        self.out_dir = abs_path(out_dir)
        self.writes = tuple(writes)
        self.command = command
        self.params = _jsonable(dict(params or {}))
        self.inputs_raw = flatten_inputs(inputs or {})
        self.argv = list(sys.argv if argv is None else argv)
        self.fresh = fresh
        self.flush_interval_s = flush_interval_s
        self.lock = RunLock(self.out_dir)
        self.manifest: dict[str, Any] = {}
        self._mutex = threading.RLock()
        self._journal: Any = None
        self._last_flush = 0.0
        self._verified: dict[str, tuple[int, int]] = {}
        self.damaged: dict[str, str] = {}
        """Outputs found changed on resume (relative path → why); their tiles are redone."""
        self.resumed = False

    # ---- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> RunContext:
        check_output_safety(self.command, self.out_dir, self.inputs_raw, folder=True, writes=self.writes)
        self.lock.acquire(self.command)
        try:
            self._open()
        except BaseException:
            self.lock.release()
            raise
        return self

    def _open(self) -> None:
        inputs = {k: describe_input(v, exclude=[self.out_dir]) for k, v in self.inputs_raw.items()}
        previous = self._previous_manifest()
        if previous is not None and previous.get("command") != self.command:  # never, not even with --overwrite
            raise MinewatchError(self.out_dir, f"folder holds a '{previous.get('command')}' run, not '{self.command}'; choose another output folder")
        if previous is not None and not self.fresh:
            self._check_compatible(previous, inputs)
            self.manifest = previous
            self.resumed = True
        else:
            if previous is not None:
                self._remove_outputs(previous)
            self.manifest = {
                "minewatch_manifest": MANIFEST_FORMAT,
                "command": self.command,
                "created": _now(),
                "parameters": self.params,
                "inputs": inputs,
                "tiles": {},
                "outputs": {},
                "history": [],
            }
        self._remove_stray_temp_files()
        self.manifest.update(
            {"status": "running", "versions": environment_versions(), "argv": self.argv, "inputs": inputs}
        )
        self.manifest["history"].append(
            {"started": _now(), "pid": os.getpid(), "host": socket.gethostname(), "argv": self.argv, "status": "running"}
        )
        self._write_manifest()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        try:
            if exc_type is None:
                # Every task of this run has ended: a temporary file now is one a lost worker (killed
                # mid-write, its tile rerun elsewhere) left behind.
                self._remove_stray_temp_files()
                status = "complete" if not self.failed_tiles() and not self.pending_tiles() else "incomplete"
                self._event({"ev": "status", "status": status, "finished": _now()})
            else:
                status = "interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed"
                err = str(exc).strip().splitlines()[0][:500] if exc is not None and str(exc).strip() else exc_type.__name__
                self._event({"ev": "status", "status": status, "finished": _now(), "error": err})
            self._write_manifest()
        finally:
            if self._journal is not None:
                self._journal.close()
                self._journal = None
            self.lock.release()

    def _previous_manifest(self) -> dict[str, Any] | None:
        if not (self.out_dir / MANIFEST).exists():
            # A journal without a manifest cannot come from us (the manifest is written first).
            (self.out_dir / JOURNAL).unlink(missing_ok=True)
            return None
        try:
            return load_manifest(self.out_dir)  # journal folded in; it is emptied by the rewrite below
        except MinewatchError as e:
            if self.fresh:  # starting over anyway: an unreadable old manifest is not an obstacle
                return None
            raise MinewatchError(e.where, f"{e.problem}; cannot resume this folder — start over with --overwrite or use another folder") from None

    def _check_compatible(self, prev: dict[str, Any], inputs: dict[str, Any]) -> None:
        where = self.out_dir
        if prev.get("command") != self.command:
            raise MinewatchError(where, f"folder holds a '{prev.get('command')}' run, not '{self.command}'; choose another output folder")
        old, new = prev.get("parameters", {}), self.params
        for key in sorted(set(old) | set(new)):
            if old.get(key) != new.get(key):
                raise MinewatchError(where, f"folder holds a run with different parameters ({key}: {old.get(key)!r} then, {new.get(key)!r} now); use another output folder, or start over with --overwrite")
        old_in = prev.get("inputs", {})
        for key in sorted(set(old_in) | set(inputs)):
            a, b = old_in.get(key, {}), inputs.get(key, {})
            if a.get("sha256", a.get("value")) != b.get("sha256", b.get("value")):
                raise MinewatchError(where, f"folder holds a run made from a different input '{key}' (changed since); use another output folder, or start over with --overwrite")

    def _remove_outputs(self, prev: dict[str, Any]) -> None:
        """``--overwrite``: delete what the previous run of this command listed, and nothing else.

        Never a path outside the folder (a hand-edited manifest), never an input of this run.
        """
        root = _real(self.out_dir)
        keep = set(input_paths(self.inputs_raw).values())
        for rel in prev.get("outputs", {}):
            p = _real(self.out_dir / rel)
            if _is_within(p, root) and p != root and p not in keep and not any(_is_within(k, p) for k in keep):
                p.unlink(missing_ok=True)
        (self.out_dir / JOURNAL).unlink(missing_ok=True)

    def _remove_stray_temp_files(self) -> None:
        remove_stray_temp(self.out_dir)

    # ---- recording --------------------------------------------------------------------------------

    def _rel(self, path: str | os.PathLike[str]) -> str:
        """An output's path relative to the run folder. A relative path is taken from the working
        directory when that lands inside the folder (``comp/tiles.geojson`` for ``--out comp``),
        else from the run folder (``tiles/a.tif``)."""
        p = Path(path)
        if not p.is_absolute():
            here = abs_path(p)
            p = here if _is_within(here, self.out_dir) and here != self.out_dir else self.out_dir / p
        try:
            return p.resolve().relative_to(self.out_dir.resolve()).as_posix()
        except ValueError:
            raise ValueError(f"{p}: outputs must be inside the run folder {self.out_dir}") from None

    def _record(self, path: str | os.PathLike[str]) -> tuple[str, dict[str, Any]]:
        rel = self._rel(path)
        full = self.out_dir / rel
        st = full.stat()
        rec = {"sha256": sha256_file(full), "size": st.st_size}
        self._verified[rel] = (st.st_size, st.st_mtime_ns)
        return rel, rec

    def _event(self, ev: dict[str, Any]) -> None:
        with self._mutex:
            _apply_event(self.manifest, ev)
            if self._journal is None:
                self._journal = open(self.out_dir / JOURNAL, "a", encoding="utf-8")  # noqa: SIM115
            self._journal.write(json.dumps(ev, default=str) + "\n")
            self._journal.flush()
            if time.monotonic() - self._last_flush >= self.flush_interval_s:
                self._write_manifest()

    def _write_manifest(self) -> None:
        with self._mutex:
            self.manifest["updated"] = _now()
            write_json_atomic(self.out_dir / MANIFEST, self.manifest)
            if self._journal is not None:
                self._journal.close()
                self._journal = None
            (self.out_dir / JOURNAL).unlink(missing_ok=True)
            self._last_flush = time.monotonic()

    def plan(self, tile_ids: Iterable[str]) -> None:
        """Declare the tiles of this run (new ones start ``pending``; known ones keep their status)."""
        ids = [str(t) for t in tile_ids]
        new = [t for t in ids if t not in self.manifest["tiles"]]
        if new:
            self._event({"ev": "plan", "ids": new})

    def todo(self, tile_ids: Iterable[str] | None = None, check_outputs: bool = True) -> list[str]:
        """Tiles still to do: not ``done``/``empty``, or done with an output missing or changed.

        ``tile_ids`` defaults to every planned tile. A done tile's outputs are checked by size and
        SHA-256 before it is skipped (a byte flipped in place keeps the size), once per process:
        a file this process wrote or already checked is not read again while its size and mtime
        stay the same. Damaged outputs are listed in :attr:`damaged`; their tiles are redone.
        """
        tiles = self.manifest["tiles"]
        ids = list(tiles) if tile_ids is None else [str(t) for t in tile_ids]
        out = []
        for tid in ids:
            entry = tiles.get(tid)
            if entry is None or entry.get("status") not in FINAL:
                out.append(tid)
            elif check_outputs and not all([self._output_intact(rel) for rel in entry.get("outputs", [])]):
                out.append(tid)
        return out

    def _output_intact(self, rel: str) -> bool:
        rec = self.manifest["outputs"].get(rel)
        p = self.out_dir / rel
        if rec is None or not p.is_file():
            self.damaged[rel] = "missing"
            return False
        st = p.stat()
        if st.st_size != rec.get("size"):
            self.damaged[rel] = f"size {st.st_size} bytes, manifest says {rec.get('size')}"
            return False
        if self._verified.get(rel) == (st.st_size, st.st_mtime_ns):
            return True
        if sha256_file(p) != rec.get("sha256"):
            self.damaged[rel] = "checksum differs from the manifest (changed or corrupted since it was written)"
            return False
        self._verified[rel] = (st.st_size, st.st_mtime_ns)
        self.damaged.pop(rel, None)
        return True

    def damage_report(self) -> str | None:
        """One line naming the damaged outputs found on resume (None when there were none)."""
        if not self.damaged:
            return None
        first, why = next(iter(self.damaged.items()))
        more = f" and {len(self.damaged) - 1} more" if len(self.damaged) > 1 else ""
        return f"{self.out_dir / first}: {why}{more}; redoing the tile(s) that wrote them"

    def is_done(self, tile_id: str) -> bool:
        return not self.todo([tile_id])

    def tile_done(self, tile_id: str, outputs: Iterable[str | os.PathLike[str]] = ()) -> None:
        """Mark a tile done and checksum its output files (which must already be in place)."""
        recs = dict(self._record(p) for p in outputs)
        self._event({"ev": "tile", "id": str(tile_id), "status": DONE, "outputs": recs, "t": _now()})

    def tile_empty(self, tile_id: str, reason: str) -> None:
        """Mark a tile ``empty``: nothing to compute there (no scene, no data). Final: a rerun does
        not retry it, the run can complete, and ``verify`` accepts it; the reason is recorded."""
        self._event({"ev": "tile", "id": str(tile_id), "status": EMPTY, "error": reason.strip().replace("\n", " ")[:500], "t": _now()})

    def tile_failed(self, tile_id: str, error: BaseException | str) -> None:
        """Mark a tile failed with a one-line reason; the run goes on and a rerun retries it."""
        if isinstance(error, MinewatchError):
            msg = error.problem if error.where == str(tile_id) else error.oneline()
        elif isinstance(error, BaseException):
            text = str(error).strip().splitlines()
            msg = f"{type(error).__name__}: {text[0]}" if text else type(error).__name__
        else:
            msg = str(error).strip().replace("\n", " ")
        self._event({"ev": "tile", "id": str(tile_id), "status": FAILED, "error": msg[:500], "t": _now()})

    def add_output(self, path: str | os.PathLike[str], tile_id: str | None = None) -> None:
        """Record (or re-record after rewriting) an output that belongs to the run as a whole."""
        rel, rec = self._record(path)
        ev = {"ev": "output", "path": rel, **rec}
        if tile_id is not None:
            ev["tile"] = str(tile_id)
        self._event(ev)

    def flush(self) -> None:
        """Rewrite the manifest now (otherwise done every ``flush_interval_s`` and at the end)."""
        self._write_manifest()

    # ---- reading ----------------------------------------------------------------------------------

    def tiles_with(self, status: str) -> list[str]:
        return sorted(t for t, e in self.manifest["tiles"].items() if e.get("status") == status)

    def failed_tiles(self) -> dict[str, str]:
        return {t: e.get("error", "") for t, e in sorted(self.manifest["tiles"].items()) if e.get("status") == FAILED}

    def pending_tiles(self) -> list[str]:
        return self.tiles_with(PENDING)

    def summary(self) -> str:
        """One line for the CLI: counts per status and where the failures are listed."""
        n = {s: len(self.tiles_with(s)) for s in (DONE, FAILED, PENDING, EMPTY)}
        line = f"{n[DONE]} tiles done, {n[FAILED]} failed, {n[PENDING]} pending"
        if n[EMPTY]:
            first = self.manifest["tiles"][self.tiles_with(EMPTY)[0]].get("error", "")
            line += f", {n[EMPTY]} empty (final: {first})"
        if n[FAILED]:
            first = next(iter(self.failed_tiles().items()))
            line += f" (first failure {first[0]}: {first[1]}); rerun the same command to retry them"
        return line


def is_bookkeeping(name: str) -> bool:
    """Files of the run machinery (manifests, journals, locks): never outputs, never "unlisted"."""
    return name in BOOKKEEPING or name.endswith(SIDECAR_SUFFIX) or name.endswith((FILE_LOCK_SUFFIX, FILE_LOCK_SUFFIX + ".json"))


def remove_stray_temp(folder: Path, names: Iterable[str] | None = None) -> list[Path]:
    """Delete temporary files and folders (``.x.tmp-123.tif``, staging folders) left by a killed run.

    ``names=None``: every temporary entry below ``folder`` outside nested run folders (a folder run
    owns its folder). Otherwise only those of the given output names directly in ``folder`` (a
    file run shares its folder with other files). Safe because the caller holds the run's lock.
    """
    import shutil

    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    if names is None:
        cands = [p for p in folder.rglob(".*") if is_temp_name(p.name) and not _inside_subrun(folder, p)]
    else:
        pats = set()
        for n in names:
            stem, suffix = Path(n).stem, Path(n).suffix
            pats.update({f".{stem}{TEMP_MARK}*{suffix}", f".{n}{TEMP_MARK}*"})
        cands = [p for pat in pats for p in folder.glob(pat)]
    for p in sorted(set(cands), key=lambda q: len(q.parts)):
        try:
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            elif p.exists() or p.is_symlink():
                p.unlink()
            removed.append(p)
        except OSError:
            continue
    return removed


def output_error(e: OSError, where: str | os.PathLike[str]) -> MinewatchError:
    """An ``OSError`` at an output edge as the one line users see: the path and the cause."""
    import errno

    path = e.filename if e.filename else where
    cause = e.strerror or str(e) or type(e).__name__
    hint = {
        errno.ENOSPC: "the disk is full: free space or choose another output location",
        errno.EROFS: "read-only filesystem: choose a writable output location",
        errno.EACCES: "permission denied: choose a writable output location",
        errno.EPERM: "permission denied: choose a writable output location",
        errno.ENOTDIR: "a file stands where a folder is needed",
        errno.EISDIR: "a folder stands where a file is needed",
        errno.EEXIST: "a file stands where a folder is needed",
    }.get(e.errno or 0)
    return MinewatchError(path, f"{cause}" + (f" ({hint})" if hint else ""))


class UnitRun:
    """A run whose outputs are made in one go (post-processing, tables, maps, reports, packages).

    Why: a command that writes several files (GeoParquet + GeoJSON + CSV + summary) must never leave
    some from one run beside others from another run, must never replace a file it did not write
    (least of all its own input), and must be verifiable like a tiled run. So every output is
    written into a private staging folder and moved into place only when all are complete, after
    checking that none would replace an input or a file that no earlier run of this command wrote;
    the manifest (inputs with SHA-256, parameters, outputs with SHA-256) is written around the move.

    Two layouts (``layout``):

    * ``"folder"`` — ``target`` is the run folder (``--out det/pp``): ``manifest.json`` and the
      ``.minewatch.lock`` in it, exactly like a tiled :class:`RunContext`.
    * ``"file"`` — ``target`` is one file (``--out map.html``): the manifest lives beside it as
      ``map.html.manifest.json`` and the lock as ``.map.html.minewatch.lock``, so the file can sit
      anywhere, also inside another run's folder (``minewatch verify`` treats it as a nested run).
      ``minewatch verify map.html`` checks it.

    A rerun into the same target redoes the whole unit (there is nothing to resume) and replaces the
    previous run's outputs of the *same command*; it refuses anything else. Usage::

        with UnitRun(out_dir, "postprocess", params, inputs={"patches": path}) as run:
            run_postprocess(path, run.staging, ...)     # write into run.staging as if it were out_dir

        with UnitRun(out_html, "map", params, inputs={"layer": layers}, layout="file") as run:
            write_map(run.stage(out_html), ...)          # staged path of each final file
            if zones_csv:
                write_csv(run.stage(zones_csv))          # outputs may also lie outside the folder

    After the ``with`` block every output is in place and listed; on any error nothing is moved,
    the staging folder is removed, an output folder this run created is removed again, and an
    ``OSError`` becomes one :class:`MinewatchError` line naming the path and the cause.
    """

    def __init__(
        self,
        target: str | os.PathLike[str],
        command: str,
        params: Mapping[str, Any] | None = None,
        inputs: Mapping[str, Any] | None = None,
        *,
        layout: str = "folder",
        argv: list[str] | None = None,
        writes: Iterable[str] = (),
    ) -> None:
        if layout not in ("folder", "file"):
            raise ValueError(f"layout must be 'folder' or 'file', not {layout!r}")
        self.target = abs_path(target)
        self.command = command
        self.layout = layout
        self.params = _jsonable(dict(params or {}))
        self.inputs_raw = flatten_inputs(inputs or {})
        self.argv = list(sys.argv if argv is None else argv)
        self.writes = tuple(writes)
        if layout == "folder":
            self.root = self.target
            self.manifest_path = self.root / MANIFEST
            self.lock = RunLock(self.root)
        else:
            self.root = self.target.parent
            self.manifest_path = self.root / (self.target.name + SIDECAR_SUFFIX)
            self.lock = RunLock(self.root, f".{self.target.name}{FILE_LOCK_SUFFIX}")
        self.staging = self.root / f".{self.target.name if layout == 'file' else 'minewatch-staging'}{TEMP_MARK}{os.getpid()}"
        self._extras: dict[Path, Path] = {}
        self._created_root = False
        self._lock_existed = True
        self.previous: dict[str, Any] | None = None
        self.manifest: dict[str, Any] = {}

    # ---- paths the command writes to ----------------------------------------------------------

    def stage(self, final: str | os.PathLike[str]) -> Path:
        """The temporary path to write ``final`` to; it is moved onto ``final`` on success."""
        final = abs_path(final)
        try:
            rel = final.relative_to(self.root)
        except ValueError:
            check_output_safety(self.command, final, self.inputs_raw, folder=False)
            tmp = final.with_name(f".{final.stem}{TEMP_MARK}{os.getpid()}{final.suffix}")
            self._extras[final] = tmp
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise output_error(e, final.parent) from None
            return tmp
        p = self.staging / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    # ---- lifecycle ----------------------------------------------------------------------------

    def __enter__(self) -> UnitRun:
        check_output_safety(self.command, self.target, self.inputs_raw, folder=self.layout == "folder", writes=self.writes)
        if self.layout == "file":
            if self.target.exists() and not self.target.is_file():
                raise MinewatchError(self.target, "exists and is not a regular file: give a file name for this output")
            if RunLock(self.root).is_held_elsewhere():
                raise MinewatchError(self.root, f"folder is in use by a running minewatch run ({RunLock(self.root).holder()}); wait for it to finish")
        self._created_root = not self.root.exists()
        if self.root.exists() and not self.root.is_dir():
            raise MinewatchError(self.root, "exists and is a file, not a folder")
        self._lock_existed = (self.root / self.lock.name).exists()
        try:
            self.lock.acquire(self.command)
        except BaseException:
            self._cleanup(failed=True)
            raise
        with self._undone_on_failure(self.root):
            self.previous = self._previous()
            names = None if self.layout == "folder" else [self.target.name, *self._previous_names()]
            remove_stray_temp(self.root, names)
            self.staging.mkdir(parents=True, exist_ok=True)
        return self

    @contextlib.contextmanager
    def _undone_on_failure(self, where: Path) -> Iterator[None]:
        """Any failure inside undoes the run (``_cleanup``); an OSError becomes one line naming ``where``."""
        try:
            yield
        except OSError as e:
            self._cleanup(failed=True)
            raise output_error(e, where) from None
        except BaseException:
            self._cleanup(failed=True)
            raise

    def _previous(self) -> dict[str, Any] | None:
        if not self.manifest_path.exists():
            return None
        try:
            m = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise MinewatchError(self.manifest_path, f"manifest is unreadable ({e}), so it cannot be told which files are outputs; remove the old outputs yourself or choose another output") from None
        if not isinstance(m, dict) or m.get("command") != self.command:
            other = m.get("command") if isinstance(m, dict) else "?"
            raise MinewatchError(self.target, f"holds a '{other}' run; a '{self.command}' run never writes over another command's outputs: choose another output")
        return m

    def _previous_names(self) -> list[str]:
        return [Path(rel).name for rel in (self.previous or {}).get("outputs", {}) if "/" not in rel]

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc_type is not None:
            self._cleanup(failed=True)
            if isinstance(exc, OSError):
                raise output_error(exc, self.target) from None
            return
        with self._undone_on_failure(self.target):
            self._commit()
        self._cleanup(failed=False)

    def _staged(self) -> dict[Path, Path]:
        """final path → staged path, for every file the command wrote."""
        out: dict[Path, Path] = {}
        if self.staging.is_dir():
            for f in sorted(self.staging.rglob("*")):
                if f.is_file() and not is_temp_name(f.name):
                    out[self.root / f.relative_to(self.staging)] = f
        for final, tmp in self._extras.items():
            if tmp.is_file():
                out[final] = tmp
        return out

    def _key(self, final: Path) -> str:
        try:
            return final.relative_to(self.root).as_posix()
        except ValueError:
            return str(final)

    def _commit(self) -> None:
        staged = self._staged()
        if not staged:
            raise MinewatchError(self.target, f"'{self.command}' produced no output")
        prev_out = (self.previous or {}).get("outputs", {})
        ins = input_paths(self.inputs_raw)
        ins_real = set(ins.values())
        for final in staged:
            real = _real(final)
            for name, p in ins.items():
                if real == p or _is_within(p, real):
                    raise MinewatchError(final, f"would replace the input '{name}'; outputs never replace inputs: choose another output")
            if final.is_dir():
                raise MinewatchError(final, "a folder stands where this output file goes; choose another output")
            if (final.exists() or final.is_symlink()) and self._key(final) not in prev_out:
                raise MinewatchError(final, f"exists and was not written by an earlier '{self.command}' run here; minewatch never replaces files it did not write: move it away or choose another output")
        outputs = {}
        for final, tmp in staged.items():
            outputs[self._key(final)] = {"sha256": sha256_file(tmp), "size": tmp.stat().st_size}
        exclude = [*staged, self.staging, self.manifest_path, *self._extras.values()]
        inputs = {k: describe_input(v, exclude=exclude) for k, v in self.inputs_raw.items()}
        history = list((self.previous or {}).get("history", []))
        history.append({"started": _now(), "pid": os.getpid(), "host": socket.gethostname(), "argv": self.argv, "status": "running"})
        self.manifest = {
            "minewatch_manifest": MANIFEST_FORMAT,
            "command": self.command,
            "layout": self.layout,
            "created": (self.previous or {}).get("created", _now()),
            "parameters": _jsonable(self.params),
            "inputs": inputs,
            "tiles": {},
            "outputs": outputs,
            "history": history,
            "status": "running",
            "versions": environment_versions(load_gdal=False),
            "argv": self.argv,
            "updated": _now(),
        }
        write_json_atomic(self.manifest_path, self.manifest)
        for final, tmp in staged.items():
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        root = _real(self.root)
        for rel in prev_out:
            if rel in outputs:
                continue
            p = _real(self.root / rel)
            if p in ins_real or any(_is_within(k, p) for k in ins_real):
                continue
            if self.layout == "folder" and not _is_within(p, root):
                continue
            if p.is_file():
                p.unlink()
        self.manifest["status"] = "complete"
        self.manifest["history"][-1].update({"status": "complete", "finished": _now()})
        self.manifest["updated"] = _now()
        write_json_atomic(self.manifest_path, self.manifest)

    def _cleanup(self, failed: bool) -> None:
        import shutil

        shutil.rmtree(self.staging, ignore_errors=True)
        for tmp in self._extras.values():
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
        held = self.lock._lock.is_locked
        self.lock.release()
        if failed and held and not self._lock_existed:  # a refused run leaves no trace, not even its lock
            for p in (self.root / self.lock.name, self.lock.info_path):
                try:
                    p.unlink(missing_ok=True)
                except OSError:
                    pass
        if failed and self._created_root and self.root.is_dir():
            # the folder did not exist before: leave nothing behind but what was there
            left = [p for p in self.root.iterdir() if not is_bookkeeping(p.name)]
            if not left:
                shutil.rmtree(self.root, ignore_errors=True)

    # ---- reading ------------------------------------------------------------------------------

    @property
    def outputs(self) -> list[Path]:
        """The final paths of the outputs (after the ``with`` block)."""
        return [self.root / k for k in self.manifest.get("outputs", {})]


class DirectRun(UnitRun):
    """A folder run whose command writes in place: model packages (``train`` resumes from the
    checkpoint it keeps in its folder; ``models import-keras`` / ``ensemble`` write graphs and
    external weights side by side).

    The same safety rules as :class:`UnitRun` (checked before anything is written): no input at or
    under the output, never another command's folder, and a folder no earlier run of this command
    made must be empty (so nothing of the user's can be replaced). The manifest is written at the
    start (status ``running``: a killed run shows in ``verify`` and resumes) and lists every file of
    the folder with its SHA-256 at the end::

        with DirectRun(out_dir, "train", params, inputs={"chips": chips_dir}) as run:
            train_package(chips, cfg, run.target, ...)
    """

    def __enter__(self) -> DirectRun:
        super().__enter__()
        import shutil

        shutil.rmtree(self.staging, ignore_errors=True)
        with self._undone_on_failure(self.root):
            if self.previous is None:
                foreign = sorted(p.name for p in self.root.iterdir() if not p.name.startswith(".") and not is_bookkeeping(p.name))
                if foreign:
                    raise MinewatchError(self.root, f"already holds files that no earlier '{self.command}' run wrote ({', '.join(foreign[:3])}{', …' if len(foreign) > 3 else ''}); give a new or empty folder")
            self._write("running", {})
        return self

    def stage(self, final: str | os.PathLike[str]) -> Path:
        """Written in place: the final path itself."""
        return abs_path(final)

    def _files(self) -> list[Path]:
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            d = Path(dirpath)
            dirnames[:] = sorted(n for n in dirnames if not is_temp_name(n) and not (d / n / MANIFEST).exists())
            out += [d / n for n in sorted(filenames) if not is_temp_name(n) and not is_bookkeeping(n)]
        return out

    def _write(self, status: str, outputs: dict[str, Any]) -> None:
        if not self.manifest:
            inputs = {k: describe_input(v, exclude=[self.root]) for k, v in self.inputs_raw.items()}
            history = list((self.previous or {}).get("history", []))
            history.append({"started": _now(), "pid": os.getpid(), "host": socket.gethostname(), "argv": self.argv, "status": status})
            self.manifest = {
                "minewatch_manifest": MANIFEST_FORMAT, "command": self.command, "layout": "direct",
                "created": (self.previous or {}).get("created", _now()), "parameters": _jsonable(self.params),
                "inputs": inputs, "tiles": {}, "outputs": outputs, "history": history,
                "versions": environment_versions(load_gdal=False), "argv": self.argv,
            }  # fmt: skip
        self.manifest.update({"status": status, "outputs": outputs, "updated": _now()})
        self.manifest["history"][-1].update({"status": status} if status == "running" else {"status": status, "finished": _now()})
        write_json_atomic(self.manifest_path, self.manifest)

    def _commit(self) -> None:
        outputs = {f.relative_to(self.root).as_posix(): {"sha256": sha256_file(f), "size": f.stat().st_size} for f in self._files()}
        if not outputs:
            raise MinewatchError(self.target, f"'{self.command}' produced no output")
        self._write("complete", outputs)

    def _cleanup(self, failed: bool) -> None:
        if failed and self.manifest and self.lock._lock.is_locked:
            try:
                self._write("failed", self.manifest.get("outputs", {}))
            except OSError:
                pass
        super()._cleanup(failed)


def _inside_subrun(root: Path, p: Path) -> bool:
    """True when ``p`` lies in a nested run folder (one with its own manifest) below ``root``."""
    for parent in p.parents:
        if parent == root:
            return False
        if (parent / MANIFEST).exists():
            return True
    return False


# --------------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------------


def _status_problem(m: dict[str, Any]) -> str:
    """Why a run whose status is not ``complete`` is not trustworthy, as one phrase."""
    status = m.get("status", "")
    states = [e.get("status") for e in m.get("tiles", {}).values()]
    counts = f"{states.count(FAILED)} tile(s) failed, {states.count(PENDING)} pending"
    if status == "running":
        return f"run did not finish (killed or crashed; {counts}); rerun the same command to complete it"
    if status == "incomplete":
        return f"run incomplete ({counts}); rerun the same command to retry them"
    err = (m.get("history") or [{}])[-1].get("error")
    return f"run ended '{status}'" + (f": {err}" if err else "") + f" ({counts}); rerun the same command to complete it"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a run folder; ``str()`` is the one line ``minewatch verify`` prints."""

    path: str
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def sidecar_of(path: Path) -> Path | None:
    """The sidecar manifest of a single-file run: ``map.html`` → ``map.html.manifest.json``."""
    if path.name.endswith(SIDECAR_SUFFIX):
        return path
    side = path.with_name(path.name + SIDECAR_SUFFIX)
    return side if side.is_file() else None


def _load_sidecar(side: Path) -> dict[str, Any]:
    try:
        m = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise MinewatchError(side, f"manifest is not valid JSON ({e})") from None
    if not isinstance(m, dict) or "minewatch_manifest" not in m:
        raise MinewatchError(side, "not a minewatch run manifest")
    return m


def _check_listed(root: Path, m: dict[str, Any], where: Path, lock: RunLock, checksums: bool) -> list[Problem]:
    """Status, tiles and every listed output of one manifest (shared by folder and file runs)."""
    problems: list[Problem] = []
    if lock.is_held_elsewhere():
        problems.append(Problem(str(where), f"run still in progress ({lock.holder()})"))
    elif m.get("status") != "complete":
        problems.append(Problem(str(where), _status_problem(m)))
    for tid, e in sorted(m.get("tiles", {}).items()):
        if e.get("status") == FAILED:
            problems.append(Problem(f"{where}/tile {tid}", f"failed: {e.get('error', '')}"))
        elif e.get("status") == PENDING:
            problems.append(Problem(f"{where}/tile {tid}", "pending (never finished)"))
    for rel, rec in sorted(m.get("outputs", {}).items()):
        p = root / rel
        if not p.is_file():
            problems.append(Problem(str(p), "listed in the manifest but missing"))
            continue
        size = p.stat().st_size
        if size != rec.get("size"):
            problems.append(Problem(str(p), f"size {size} bytes, manifest says {rec.get('size')}"))
        elif checksums and sha256_file(p) != rec.get("sha256"):
            problems.append(Problem(str(p), "checksum differs from the manifest (file changed or corrupted)"))
    return problems


def _verify_file_run(side: Path, checksums: bool) -> tuple[list[Problem], set[Path]]:
    """Problems of a single-file run (its sidecar manifest) and the paths it owns."""
    root = side.parent
    name = side.name[: -len(SIDECAR_SUFFIX)]
    try:
        m = _load_sidecar(side)
    except MinewatchError as e:
        return [Problem(e.where or str(side), e.problem)], set()
    lock = RunLock(root, f".{name}{FILE_LOCK_SUFFIX}")
    owned = {root / rel for rel in m.get("outputs", {})}
    problems = _check_listed(root, m, root / name, lock, checksums)
    for pat in (f".{Path(name).stem}{TEMP_MARK}*{Path(name).suffix}", f".{name}{TEMP_MARK}*"):
        for t in root.glob(pat):
            problems.append(Problem(str(t), "stray temporary file (a write was interrupted)"))
    return problems, owned


def verify_run(run_dir: str | os.PathLike[str], checksums: bool = True) -> list[Problem]:
    """Everything wrong with a run folder (or single-file run), as a list (empty: complete and intact).

    Checks: a readable manifest; the run finished (``complete``) and is not still running; no tile
    failed or pending (``empty`` tiles are final and fine); every listed output exists with its
    recorded size and SHA-256 (size only with ``checksums=False``); no stray temporary files and no
    files the manifest does not list. Nested run folders (with their own ``manifest.json``) and
    single-file runs inside the folder (``<file>.manifest.json``) are verified in turn. A folder
    with no manifest of its own but nested runs (e.g. ``minewatch run`` with one folder per stage)
    verifies those. ``run_dir`` may also be a single-file run's output or its sidecar manifest.

    Never writes: an archived run on a read-only disk verifies.
    """
    run_dir = Path(run_dir)
    if run_dir.is_file() or run_dir.name.endswith(SIDECAR_SUFFIX):
        side = sidecar_of(run_dir)
        if side is None or not side.is_file():
            return [Problem(str(run_dir), f"not a minewatch output: {run_dir.name}{SIDECAR_SUFFIX} missing beside it")]
        return _verify_file_run(side, checksums)[0]
    if not run_dir.is_dir():
        return [Problem(str(run_dir), "not a folder")]
    if not (run_dir / MANIFEST).exists():
        subs = sorted(p.parent for p in run_dir.glob(f"*/**/{MANIFEST}") if not _inside_subrun(run_dir, p.parent))
        sides = sorted(p for p in run_dir.rglob(f"*{SIDECAR_SUFFIX}") if not _inside_subrun(run_dir, p))
        if subs or sides:
            return [pr for s in subs for pr in verify_run(s, checksums)] + [pr for sd in sides for pr in _verify_file_run(sd, checksums)[0]]
        return [Problem(str(run_dir), f"not a minewatch run folder: {MANIFEST} missing")]
    try:
        m = load_manifest(run_dir)
    except MinewatchError as e:
        return [Problem(e.where or str(run_dir), e.problem)]

    problems = _check_listed(run_dir, m, run_dir, RunLock(run_dir), checksums)
    listed = m.get("outputs", {})

    nested: list[Path] = []
    owned: set[Path] = set()
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(run_dir):
        d = Path(dirpath)
        keep = []
        for n in sorted(dirnames):
            sub = d / n
            if is_temp_name(n):
                problems.append(Problem(str(sub), "stray temporary folder (a run was interrupted)"))
            elif (sub / MANIFEST).exists():
                nested.append(sub)
            else:
                keep.append(n)
        dirnames[:] = keep
        for n in sorted(filenames):
            f = d / n
            if n.endswith(SIDECAR_SUFFIX):
                sp, own = _verify_file_run(f, checksums)
                problems.extend(sp)
                owned |= own
            else:
                files.append(f)
    for p in files:
        rel = p.relative_to(run_dir).as_posix()
        if p in owned or rel in listed or is_bookkeeping(p.name):
            continue
        if is_temp_name(p.name):
            if not any(_is_within(p, o.parent) and p.name.startswith(f".{o.stem}{TEMP_MARK}") for o in owned):
                problems.append(Problem(str(p), "stray temporary file (a write was interrupted)"))
        else:
            problems.append(Problem(str(p), "not listed in the manifest"))
    for sub in nested:
        problems.extend(verify_run(sub, checksums))
    return problems
