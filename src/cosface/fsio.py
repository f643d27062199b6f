"""Files on disk the way a user can trust them: one-line errors that name the path and the OS reason,
writes that replace a file whole or not at all, and text that is valid UTF-8 or refused.

Every output the package writes goes through `atomic_write` (or `append_text` for logs), so an
unwritable directory, a path blocked by a file, a full disk or a file-size limit leaves every earlier
file byte-identical and ends in a `CosfaceError` instead of a traceback.
"""
from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

from cosface.errors import CosfaceError

# Temporary files are named `.<final name>.<random>.tmp` beside their target, so a later start can
# recognise (and remove) the leftovers of a write that a crash or kill -9 interrupted.
TEMP_SUFFIX = ".tmp"


def os_reason(e: BaseException) -> str:
    """The OS's words for an error ('No space left on device'), or the exception's own first line."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def user_umask() -> int:
    """The process's umask, read without changing it where the OS allows (Linux /proc: no window in
    which another thread would create files with a different mask), else by setting it back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ensure_dir(path: str | os.PathLike, what: str = "output directory") -> Path:
    """mkdir -p with one-line errors: a parent that is a file, no permission, a read-only disk."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CosfaceError(f"cannot create {what} {p}: a file of that name is in the way") from None
    except OSError as e:
        raise CosfaceError(f"cannot create {what} {p}: {os_reason(e)}") from None
    if not p.is_dir():
        raise CosfaceError(f"cannot create {what} {p}: a file of that name is in the way")
    return p


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any], what: str = "file") -> Path:
    """Write through `write(binary file)` into a temporary file beside `path`, fsync, rename over it.

    On any failure (no permission, disk full, file-size limit, an error inside `write`) the temporary
    file is removed, `path` keeps its old content (or stays absent), and OS failures become one
    CosfaceError naming `path` and the reason. The file gets the permissions the user's umask allows.
    """
    path = Path(path)
    ensure_dir(path.parent, f"directory for {what}")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise CosfaceError(f"cannot write {what} {path}: {os_reason(e)}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~user_umask())   # mkstemp makes 0600; a normal file follows the umask
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        cause = _os_error_in_chain(e)
        if cause is not None or _is_write_failure(e):
            raise CosfaceError(f"cannot write {what} {path}: {os_reason(cause or e)}") from None
        raise
    return path


def _os_error_in_chain(e: BaseException | None) -> OSError | None:
    """The OSError behind `e`: itself, or one it was raised while handling (torch.save's zip writer
    masks a failed write with its own RuntimeError on the way out)."""
    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, OSError):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _is_write_failure(e: BaseException) -> bool:
    # torch.save may report a failed write of its zip stream as a RuntimeError from its C++ writer alone.
    return isinstance(e, RuntimeError) and ("write" in str(e).lower() or "PytorchStreamWriter" in str(e))


def write_text(path: str | os.PathLike, text: str, what: str = "file") -> Path:
    """Replace `path` with UTF-8 `text`, atomically."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data), what)


def write_bytes(path: str | os.PathLike, data: bytes, what: str = "file") -> None:
    """Write a new file (no fsync: for the many files of a bulk export); a failed write removes the
    partial file and names the path."""
    path = Path(path)
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as e:
        with contextlib.suppress(OSError):
            path.unlink()
        raise CosfaceError(f"cannot write {what} {path}: {os_reason(e)}") from None


def append_text(path: str | os.PathLike, text: str, what: str = "log") -> None:
    """Append `text` to `path`; a failed write is cut back off, so the file never ends in half a line."""
    path = Path(path)
    try:
        with open(path, "ab") as f:
            start = f.tell()
            try:
                f.write(text.encode("utf-8"))
                f.flush()
            except OSError:
                with contextlib.suppress(OSError):
                    f.truncate(start)
                raise
    except OSError as e:
        raise CosfaceError(f"cannot write {what} {path}: {os_reason(e)}") from None


def read_text(path: str | os.PathLike, what: str = "file") -> str:
    """A UTF-8 text file's content (a leading BOM dropped); not UTF-8 is a one-line error with the byte offset."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CosfaceError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise CosfaceError(f"{what} {path} is a directory, not a file") from None
    except OSError as e:
        raise CosfaceError(f"cannot read {what} {path}: {os_reason(e)}") from None
    return decode_utf8(data, path, what)


def decode_utf8(data: bytes, path: str | os.PathLike, what: str = "file") -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise CosfaceError(f"{what} {path} is not UTF-8 text: byte 0x{data[e.start]:02x} at byte offset {e.start} "
                           f"(line {line}); save it as UTF-8") from None


def remove_orphaned_temp_files(directory: str | os.PathLike, name: str) -> list[Path]:
    """Delete `.<name>.<pid>.tmp` files (a pid-named temporary file beside `name`) whose writing
    process no longer exists: a killed export's leftovers, never a write still in progress."""
    removed = []
    for p in Path(directory).glob(f".{glob.escape(name)}.*{TEMP_SUFFIX}"):
        pid = p.name[len(name) + 2:-len(TEMP_SUFFIX)]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, owned by someone else
        return True
    return True


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files `atomic_write` leaves behind when a process dies mid-write.

    Only call this where the caller owns the directory (e.g. holds the run lock): a temporary file of
    a write still in progress in another process would otherwise be removed under it.
    """
    d = Path(directory)
    if not d.is_dir():
        return []
    removed = []
    for p in d.iterdir():
        if p.name.startswith(".") and p.name.endswith(TEMP_SUFFIX) and p.is_file():
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed
