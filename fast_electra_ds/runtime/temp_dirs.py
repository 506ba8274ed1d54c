"""Temporary directories beside an output (an export's `.<name>.export-*`, a prepare's
`.<name>.tmp-*`, the `.<name>.old-*` an output is swapped out to), named after the process that
writes them, and the cleaning of those a killed process left behind; `write_atomically`, the one
whole-or-absent file write of the package.

A name carries the writer's pid and a hash of its host: `.<name>.<kind>-<pid>-<host hash>[-random]`.
The next run that writes the same output removes such a directory when it can prove it dead (this
host, and the pid no longer runs) or when it was last modified more than STALE_AFTER_S ago (another
host, or a name from an older version without pid and host); every other one is only reported. An
`old` directory holds the previous output until the new one is in place: it is removed only once the
output exists again. Nothing that does not match these names is touched."""
from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import time
import zlib
from pathlib import Path
from typing import BinaryIO, Callable

STALE_AFTER_S = 24 * 3600
KINDS = ("export", "tmp", "old")


def host_hash(host: str | None = None) -> str:
    return f"{zlib.crc32((host or socket.gethostname()).encode()):08x}"


def temp_name(target: Path, kind: str) -> str:
    """The name (without a random tail) of this process's `kind` directory beside `target`."""
    return f".{target.name}.{kind}-{os.getpid()}-{host_hash()}"


def write_atomically(path: Path, content: str | bytes | Callable[[BinaryIO], object]) -> None:
    """`content` (text, bytes, or a function writing to a binary handle) into `.<name>.tmp-<pid>-<host>`
    beside `path`, flushed to disk, then renamed over `path`: a reader sees the old file or the new one
    whole, never a half-written one, even after a crash or a power loss."""
    path = Path(path)
    temp = path.parent / temp_name(path, "tmp")
    try:
        with open(temp, "wb") as handle:
            if callable(content):
                content(handle)
            else:
                handle.write(content.encode() if isinstance(content, str) else content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _pattern(target: Path, kinds: tuple[str, ...]) -> re.Pattern:
    return re.compile(rf"\.{re.escape(target.name)}\.(?P<kind>{'|'.join(kinds)})-"
                      rf"(?:(?P<pid>\d+)-(?P<host>[0-9a-f]{{8}})(?:-[a-z0-9_]+)?|(?P<legacy>[a-z0-9_]+))")


def pid_runs(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")  # a zombie has ended


def _last_modified(path: Path) -> float:
    newest = path.lstat().st_mtime
    for entry in path.rglob("*"):
        try:
            newest = max(newest, entry.lstat().st_mtime)
        except OSError:
            pass
    return newest


def clean_orphans(target: Path, kinds: tuple[str, ...], say=None, now: float | None = None) -> list[Path]:
    """Remove the dead temporary directories of `kinds` beside `target`, report the others (one line
    each through `say`, stderr by default); return those removed."""
    say = say or (lambda text: print(f"warning: {text}", file=sys.stderr, flush=True))
    target, now = Path(target), time.time() if now is None else now
    if not target.parent.is_dir():
        return []
    pattern, removed = _pattern(target, kinds), []
    for path in sorted(target.parent.iterdir()):
        match = pattern.fullmatch(path.name)
        if not match or path.is_symlink() or not path.is_dir():
            continue
        kind = match["kind"]
        try:
            age_h = (now - _last_modified(path)) / 3600
        except OSError:
            continue  # removed meanwhile
        if match["pid"] and match["host"] == host_hash():
            dead, why = not pid_runs(int(match["pid"])), f"its process {match['pid']} no longer runs"
            alive = f"process {match['pid']} on this host still runs"
        else:
            dead, why = age_h * 3600 > STALE_AFTER_S, f"untouched for {age_h:.0f} h"
            alive = f"it may belong to a run on another host or of an older version (modified {age_h:.1f} h ago)"
        if dead and kind == "old" and not target.exists():
            say(f"{path} holds the previous {target.name}, swapped out by a process that died before installing the new one: "
                f"move {path} back to {target} (or remove it)")
        elif dead:
            shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                removed.append(path)
                say(f"removed {path}, the temporary directory of {_what(kind)} of {target} that was killed ({why})")
        else:
            say(f"left {path} alone, a temporary directory of {_what(kind)} of {target}: {alive}; remove it once no such run is active")
    return removed


def _what(kind: str) -> str:
    return {"export": "an export", "tmp": "a prepare", "old": "a replacement"}[kind]
