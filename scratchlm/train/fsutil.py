"""File-system faults as messages a user can act on, and the guards that keep outputs from replacing data.

``describe_os_error`` turns an ``OSError`` (disk full, no permission, missing folder, a path that is a file)
into one line that names the path and what to do; the CLI prints it instead of a traceback.
``check_output_file`` refuses an output path that is the input, an existing file (without ``overwrite``), a
folder, in a missing folder, or of a format the writer does not know. ``write_atomic`` writes through a
temporary sibling, so a fault mid-write never leaves a half-written file or replaces a good one.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..config import ConfigError

DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG)

_HINTS = {
    errno.ENOSPC: "the disk is full: free some space there (or choose a folder on another disk) and run the "
                  "command again",
    errno.EFBIG: "the file is too large for that disk or file system: choose a folder on another disk",
    errno.EACCES: "no permission: choose a folder you can write to, or fix the permissions",
    errno.EPERM: "not permitted: choose a folder you can write to, or fix the permissions",
    errno.EROFS: "the file system is read-only: choose a folder you can write to",
    errno.ENOENT: "it does not exist: check the path (the folder an output goes into must exist)",
    errno.EISDIR: "it is a folder: give a file path",
    errno.ENOTDIR: "a part of that path is a file, not a folder: choose another path",
    errno.EEXIST: "it already exists (as a file where a folder is needed, or the reverse): choose another path",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
}
if hasattr(errno, "EDQUOT"):
    _HINTS[errno.EDQUOT] = "the disk quota is exceeded: free some space and run the command again"


def is_disk_full(e: BaseException) -> bool:
    """True for ENOSPC/EDQUOT, also when numpy or safetensors reported it without an errno."""
    if isinstance(e, OSError) and e.errno in DISK_FULL:
        return True
    text = str(e)
    return "No space left on device" in text or ("requested and" in text and "written" in text)


def describe_os_error(e: OSError) -> str:
    """``<what went wrong>: <path> (<what to do>)``, one line, no traceback."""
    code = e.errno
    if code is None and is_disk_full(e):
        code = errno.ENOSPC
    what = e.strerror or str(e) or type(e).__name__
    if code == errno.ENOSPC and "No space" not in what:
        what = f"no space left on device ({what})"
    path = e.filename
    where = f": {path}" if path else ""
    if e.filename2:
        where += f" -> {e.filename2}"
    hint = _HINTS.get(code)
    return f"{what}{where}" + (f" ({hint})" if hint else "")


def reraise_with_path(e: OSError, path: str | os.PathLike, action: str = "write") -> OSError:
    """An OSError that keeps ``e``'s errno (disk full is inferred when numpy left it out) and names ``path``."""
    code = e.errno if e.errno is not None else (errno.ENOSPC if is_disk_full(e) else None)
    strerror = e.strerror or str(e)
    if code == errno.ENOSPC and "No space" not in strerror:
        strerror = f"No space left on device ({strerror})"
    return OSError(code, f"{strerror}, while trying to {action}" if e.filename is None else strerror,
                   str(e.filename or path))


# ---- outputs ------------------------------------------------------------------------------------------

def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    a, b = Path(a), Path(b)
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_output_file(out: str | os.PathLike, *, flag: str = "--output", inputs: tuple = (),
                      overwrite: bool = False, formats: tuple[str, ...] | None = None) -> Path:
    """Refuse an output file that would lose data or cannot be written; return it as a Path."""
    out = Path(out)
    if out.is_dir():
        example = out / ("predictions" + (formats or (".jsonl",))[0])
        raise ConfigError(f"{flag} {out} is a folder; give a file name, e.g. {example}")
    if formats is not None and out.suffix.lower() not in formats:
        raise ConfigError(f"{flag} {out}: '{out.suffix or '(no extension)'}' is not a format this command writes; "
                          f"name the file with one of {', '.join(formats)}")
    for src in inputs:
        if src and same_file(out, src):
            raise ConfigError(f"{flag} {out} is the input file: writing there would replace your data; choose "
                              f"another name")
    parent = out.parent
    if not parent.exists():
        raise ConfigError(f"{flag} {out}: the folder {parent} does not exist; create it first (mkdir -p {parent})")
    if not parent.is_dir():
        raise ConfigError(f"{flag} {out}: {parent} is a file, not a folder")
    if out.exists() and not overwrite:
        raise ConfigError(f"{flag} {out} already exists; choose another name, or pass --overwrite to replace it")
    if not os.access(parent, os.W_OK):
        raise ConfigError(f"{flag} {out}: no permission to write in {parent}; choose a folder you can write to")
    return out


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """``write(tmp)`` into a temporary sibling, then rename it over ``path``: a fault (disk full) leaves
    ``path`` as it was and no partial file behind."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise reraise_with_path(e, path) from e
        raise
    return path


# ---- run folders --------------------------------------------------------------------------------------

RUN_MARKERS = ("checkpoints", "model", "report.json")


def holds_run(out_dir: str | os.PathLike) -> list[str]:
    """What in ``out_dir`` makes it a run (checkpoints, a model folder, a report); [] when there is none.

    Prepared data alone (``data/``), logs of a run that never saved, or an empty ``checkpoints/`` are not a run."""
    out = Path(out_dir)
    found = []
    ck = out / "checkpoints"
    if ck.is_dir() and any(p.name in ("LATEST", "BEST") or (p.is_dir() and p.name.startswith("step_"))
                           for p in ck.iterdir()):
        found.append("checkpoints/")
    if (out / "model").is_dir() and any((out / "model").iterdir()):
        found.append("model/")
    if (out / "report.json").is_file():
        found.append("report.json")
    return found


def check_run_folder(out_dir: str | os.PathLike, *, resume: bool, overwrite: bool, main: bool = True,
                     log=print) -> Path | None:
    """Before a run writes into ``out_dir``: refuse a file, and a folder that holds a run unless ``resume`` (continue
    it) or ``overwrite`` (move it aside to ``<out_dir>.old-<time>``, returned, so two lineages never mix)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"train.out_dir {out} is a file, not a folder; choose a folder for the run")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"train.out_dir {out}: {parent} is a file, not a folder")
            break
    if resume or not out.is_dir():
        return None
    found = holds_run(out)
    if not found:
        return None
    if not overwrite:
        raise ConfigError(f"{out} already holds a run ({', '.join(found)}); continue it with --resume, or start "
                          f"a new one there with --overwrite (the old run is moved aside, not deleted), or "
                          f"choose another folder (train.out_dir / --name)")
    if not main:
        return None
    aside = out.with_name(f"{out.name}.old-{time.strftime('%Y%m%d-%H%M%S')}")
    n = 1
    while aside.exists():
        n += 1
        aside = out.with_name(f"{out.name}.old-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
    try:
        os.replace(out, aside)
    except OSError:
        shutil.move(str(out), str(aside))
    log(f"--overwrite: moved the previous run in {out} to {aside}")
    return aside
