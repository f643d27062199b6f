"""A run directory belongs to one run: an OS-level lock for the run's lifetime, and no silent reuse.

`claim_run_dir` is what the trainer calls before it reads or writes anything under `--out`:

* a second trainer on the same directory is refused, naming the process that holds it. The lock is
  `flock` on `<out>/.lock`, which the kernel drops when the holder exits or is killed, so a crashed
  run never leaves the directory locked (the file itself may stay; it is not the lock);
* a directory that already holds a run (checkpoints or metrics) is refused unless the caller
  resumes it (`--resume`) or asks to replace it (`--overwrite`, which moves the old run aside to
  `<out>.old-<UTC time>`; nothing is deleted);
* temporary files of a save that a crash interrupted are removed (the lock proves nobody is writing).

Under torchrun rank 0 holds the lock; its verdict is broadcast so every rank stops with the same line.
"""
from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path

from cosface.errors import CosfaceError
from cosface.fsio import ensure_dir, os_reason, remove_stale_temp_files

LOCK_FILE = ".lock"


class RunLock:
    """An exclusive `flock` on `<directory>/.lock`, naming its holder inside the file."""

    def __init__(self, directory: Path):
        import fcntl

        self.path = directory / LOCK_FILE
        try:
            self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise CosfaceError(f"cannot create the run lock {self.path}: {os_reason(e)}") from None
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(self._fd)
            raise CosfaceError(f"run directory {directory} is in use by {holder} (lock {self.path}); wait for "
                               f"that run to end, or train into another --out") from None
        except OSError as e:
            os.close(self._fd)
            raise CosfaceError(f"cannot lock the run directory {directory}: {os_reason(e)}") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


def existing_run(directory: Path) -> str | None:
    """A description of the run already in `directory`, or None when it holds none."""
    from cosface.checkpoint import list_checkpoints

    ckpts = list_checkpoints(directory / "checkpoints")
    if ckpts:
        return f"{len(ckpts)} checkpoint(s), newest {ckpts[-1].name}"
    if (directory / "metrics.jsonl").exists():
        return "the metrics.jsonl of an earlier run"
    return None


def _move_aside(directory: Path) -> Path:
    """Move everything in `directory` but the lock file into a new sibling `<name>.old-<UTC time>`."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    aside = directory.with_name(f"{directory.name}.old-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = directory.with_name(f"{directory.name}.old-{stamp}-{n}")
    try:
        aside.mkdir()
        for entry in directory.iterdir():
            if entry.name != LOCK_FILE:
                os.rename(entry, aside / entry.name)
    except OSError as e:
        raise CosfaceError(f"--overwrite: cannot move the previous run in {directory} to {aside}: {os_reason(e)}") from None
    return aside


def _claim(directory: Path, resume: str | None, overwrite: bool, say) -> RunLock:
    if overwrite and resume is not None:
        raise CosfaceError("--overwrite starts a new run and --resume continues one: pass only one of them")
    if directory.exists() and not directory.is_dir():
        raise CosfaceError(f"--out {directory} is a file, not a directory")
    ensure_dir(directory, "run directory")
    lock = RunLock(directory)
    try:
        found = existing_run(directory)
        if found and resume is None:
            if not overwrite:
                raise CosfaceError(f"run directory {directory} already holds a run ({found}); pass --resume auto to "
                                   f"continue it, or --overwrite to start over (the old run is moved aside; in Python: "
                                   f"resume='auto' or overwrite=True)")
            say(f"--overwrite: moved the previous run in {directory} to {_move_aside(directory)}")
        for d in (directory, directory / "checkpoints"):
            for p in remove_stale_temp_files(d):
                say(f"removed {p}, left by a save that was interrupted")
    except BaseException:
        lock.release()
        raise
    return lock


@contextlib.contextmanager
def claim_run_dir(directory: str | os.PathLike, runtime, resume: str | None = None, overwrite: bool = False):
    """Hold `directory` for the duration of the block (see the module doc); rank 0 decides for all ranks."""
    directory = Path(directory)
    lock, error = None, None
    if runtime.is_main:
        try:
            lock = _claim(directory, resume, overwrite, say=lambda m: print(m, flush=True))
        except CosfaceError as e:
            error = str(e)
    error = runtime.broadcast_object(error)
    if error is not None:
        raise CosfaceError(error)
    try:
        yield
    finally:
        if lock is not None:
            lock.release()
