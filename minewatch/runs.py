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

import datetime as dt
import hashlib
import json
import os
import platform
import socket
import sys
import threading
import time
from collections.abc import Iterable, Mapping
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
MANIFEST_FORMAT = 1
PENDING, DONE, FAILED = "pending", "done", "failed"
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


def environment_versions() -> dict[str, str]:
    """Versions of minewatch, Python, GDAL and the key libraries that shape a run's numbers."""
    out = {"minewatch": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for name in KEY_LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    if "rasterio" in out:
        try:
            import rasterio

            out["gdal"] = rasterio.__gdal_version__
        except Exception:  # pragma: no cover - a broken GDAL install must not stop a run from recording
            pass
    return out


def describe_input(value: Any) -> dict[str, Any]:
    """How an input goes into the manifest: files and folders with checksums, anything else as given.

    Folders up to :data:`DIR_HASH_LIMIT` get a digest over (relative path, SHA-256) of every file; larger
    ones (a folder of continental composites) a digest over (relative path, size, mtime), marked as
    such, so that recording inputs never costs as much as the run itself.
    """
    if isinstance(value, (str, os.PathLike)) and not _looks_like_url(str(value)):
        p = Path(value)
        if p.is_file():
            return {"path": str(p.resolve()), "size": p.stat().st_size, "sha256": sha256_file(p)}
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and not is_temp_name(f.name))
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


def _jsonable(obj: Any) -> Any:
    """Parameters as they will read back from JSON (tuples → lists, paths → str), for comparison."""
    return json.loads(json.dumps(obj, default=str))


# --------------------------------------------------------------------------------------------------
# The lock
# --------------------------------------------------------------------------------------------------


class RunLock:
    """A non-blocking, exclusive lock on a run folder; the failure message names the holder."""

    def __init__(self, run_dir: str | os.PathLike[str]) -> None:
        from filelock import FileLock

        self.run_dir = Path(run_dir)
        self._lock = FileLock(str(self.run_dir / LOCK), timeout=0)

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
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": _now(), "command": command}
        write_json_atomic(self.run_dir / LOCK_INFO, info)

    def release(self) -> None:
        if self._lock.is_locked:
            self._lock.release()

    def holder(self) -> str:
        """Who holds the lock, as one phrase (best effort: the holder writes it just after locking)."""
        try:
            info = json.loads((self.run_dir / LOCK_INFO).read_text())
            what = f"'{info['command']}' " if info.get("command") else ""
            return f"{what}pid {info['pid']} on {info['host']}, started {info['started']}"
        except (OSError, ValueError, KeyError, TypeError):
            return "holder unknown"

    def is_held_elsewhere(self) -> bool:
        """True when another process holds the lock right now (probes without keeping it)."""
        if not (self.run_dir / LOCK).exists():
            return False
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            return True
        self._lock.release()
        return False

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
    ) -> None:
        self.out_dir = Path(out_dir)
        self.command = command
        self.params = _jsonable(dict(params or {}))
        self.inputs_raw = dict(inputs or {})
        self.argv = list(sys.argv if argv is None else argv)
        self.fresh = fresh
        self.flush_interval_s = flush_interval_s
        self.lock = RunLock(self.out_dir)
        self.manifest: dict[str, Any] = {}
        self._mutex = threading.RLock()
        self._journal: Any = None
        self._last_flush = 0.0
        self.resumed = False

    # ---- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> RunContext:
        self.lock.acquire(self.command)
        try:
            self._open()
        except BaseException:
            self.lock.release()
            raise
        return self

    def _open(self) -> None:
        inputs = {k: describe_input(v) for k, v in self.inputs_raw.items()}
        previous = self._previous_manifest()
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
        for rel in prev.get("outputs", {}):
            (self.out_dir / rel).unlink(missing_ok=True)
        (self.out_dir / JOURNAL).unlink(missing_ok=True)

    def _remove_stray_temp_files(self) -> None:
        for p in self.out_dir.rglob(".*"):
            if p.is_file() and is_temp_name(p.name) and not _inside_subrun(self.out_dir, p):
                p.unlink(missing_ok=True)

    # ---- recording --------------------------------------------------------------------------------

    def _rel(self, path: str | os.PathLike[str]) -> str:
        p = Path(path)
        if not p.is_absolute():
            p = self.out_dir / p
        try:
            return p.resolve().relative_to(self.out_dir.resolve()).as_posix()
        except ValueError:
            raise ValueError(f"{p}: outputs must be inside the run folder {self.out_dir}") from None

    def _record(self, path: str | os.PathLike[str]) -> tuple[str, dict[str, Any]]:
        rel = self._rel(path)
        full = self.out_dir / rel
        return rel, {"sha256": sha256_file(full), "size": full.stat().st_size}

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
        """Tiles still to do: not ``done``, or done but with an output missing or changed in size.

        ``tile_ids`` defaults to every planned tile. Only sizes are compared (a checksum of every
        output on every resume would cost as much as reading the run again; atomic writes already
        exclude truncated files under real names) — :func:`verify_run` does the full check.
        """
        tiles = self.manifest["tiles"]
        ids = list(tiles) if tile_ids is None else [str(t) for t in tile_ids]
        out = []
        for tid in ids:
            entry = tiles.get(tid)
            if entry is None or entry.get("status") != DONE:
                out.append(tid)
            elif check_outputs and not all(self._output_intact(rel) for rel in entry.get("outputs", [])):
                out.append(tid)
        return out

    def _output_intact(self, rel: str) -> bool:
        rec = self.manifest["outputs"].get(rel)
        p = self.out_dir / rel
        return rec is not None and p.is_file() and p.stat().st_size == rec.get("size")

    def is_done(self, tile_id: str) -> bool:
        return not self.todo([tile_id])

    def tile_done(self, tile_id: str, outputs: Iterable[str | os.PathLike[str]] = ()) -> None:
        """Mark a tile done and checksum its output files (which must already be in place)."""
        recs = dict(self._record(p) for p in outputs)
        self._event({"ev": "tile", "id": str(tile_id), "status": DONE, "outputs": recs, "t": _now()})

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
        n = {s: len(self.tiles_with(s)) for s in (DONE, FAILED, PENDING)}
        line = f"{n[DONE]} tiles done, {n[FAILED]} failed, {n[PENDING]} pending"
        if n[FAILED]:
            first = next(iter(self.failed_tiles().items()))
            line += f" (first failure {first[0]}: {first[1]}); rerun the same command to retry them"
        return line


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


def verify_run(run_dir: str | os.PathLike[str], checksums: bool = True) -> list[Problem]:
    """Everything wrong with a run folder, as a list (empty: the run is complete and intact).

    Checks: a readable manifest; the run finished (``complete``) and is not still running; no tile
    failed or pending; every listed output exists with its recorded size and SHA-256 (size only with
    ``checksums=False``); no stray temporary files and no files the manifest does not list. Nested
    run folders (with their own ``manifest.json``) are verified in turn. A folder with no manifest of
    its own but nested runs (e.g. ``minewatch run`` with one folder per stage) verifies those.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return [Problem(str(run_dir), "not a folder")]
    if not (run_dir / MANIFEST).exists():
        subs = sorted(p.parent for p in run_dir.glob(f"*/**/{MANIFEST}") if not _inside_subrun(run_dir, p.parent))
        if subs:
            return [pr for s in subs for pr in verify_run(s, checksums)]
        return [Problem(str(run_dir), f"not a minewatch run folder: {MANIFEST} missing")]
    try:
        m = load_manifest(run_dir)
    except MinewatchError as e:
        return [Problem(e.where or str(run_dir), e.problem)]

    problems: list[Problem] = []
    lock = RunLock(run_dir)
    if lock.is_held_elsewhere():
        problems.append(Problem(str(run_dir), f"run still in progress ({lock.holder()})"))
    elif m.get("status") != "complete":
        problems.append(Problem(str(run_dir), _status_problem(m)))
    for tid, e in sorted(m.get("tiles", {}).items()):
        if e.get("status") == FAILED:
            problems.append(Problem(f"{run_dir}/tile {tid}", f"failed: {e.get('error', '')}"))
        elif e.get("status") == PENDING:
            problems.append(Problem(f"{run_dir}/tile {tid}", "pending (never finished)"))

    listed = m.get("outputs", {})
    for rel, rec in sorted(listed.items()):
        p = run_dir / rel
        if not p.is_file():
            problems.append(Problem(str(p), "listed in the manifest but missing"))
            continue
        size = p.stat().st_size
        if size != rec.get("size"):
            problems.append(Problem(str(p), f"size {size} bytes, manifest says {rec.get('size')}"))
        elif checksums and sha256_file(p) != rec.get("sha256"):
            problems.append(Problem(str(p), "checksum differs from the manifest (file changed or corrupted)"))

    nested: list[Path] = []
    for p in sorted(run_dir.rglob("*")):
        if p.is_dir():
            if (p / MANIFEST).exists() and not _inside_subrun(run_dir, p):
                nested.append(p)
            continue
        if _inside_subrun(run_dir, p):
            continue
        rel = p.relative_to(run_dir).as_posix()
        if is_temp_name(p.name):
            problems.append(Problem(str(p), "stray temporary file (a write was interrupted)"))
        elif rel not in listed and rel not in BOOKKEEPING:
            problems.append(Problem(str(p), "not listed in the manifest"))
    for sub in nested:
        problems.extend(verify_run(sub, checksums))
    return problems
