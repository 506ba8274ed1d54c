"""User-facing errors: one line naming the problem and the fix, no traceback."""
from __future__ import annotations

import contextlib
import errno
import os
import sys
import tempfile
from pathlib import Path


class UserError(Exception):
    """A mistake in the user's input (files, config, vocabularies). The CLI prints
    `error: <message>` on one line and exits with status 2."""

    exit_code = 2
    known_to_every_rank = False  # an agreed error (a collective decision): no other rank needs telling

    def __init__(self, problem: str, fix: str = ""):
        message = problem if not fix else f"{problem}; {fix}"
        super().__init__(" ".join(message.split()))  # always one line


class PeerRankFailure(UserError):
    """Another rank of the job died (killed, out of memory, node lost): this rank cannot go on."""

    exit_code = 3


# Failures of a path the user chose (an output on a read-only or full disk, a directory under a file),
# not of the program: each with its fix. Others (a missing file, a bug) keep their traceback.
_PATH_FIXES = {
    errno.EROFS: "choose an output on a writable file system",
    errno.EACCES: "choose a path you may use, or change its permissions",
    errno.EPERM: "choose a path you may use, or change its permissions",
    errno.ENOSPC: "free space there, or choose an output on another disk",
    errno.EDQUOT: "free space there (quota), or choose an output on another disk",
    errno.ENOTDIR: "a part of the path is a file, not a directory: choose another path",
    errno.EISDIR: "name a file, or choose another path",
    errno.EEXIST: "move it away, or choose another path",
    errno.ENAMETOOLONG: "choose a shorter path",
    errno.EFBIG: "raise the file size limit (ulimit -f), or choose an output on another file system",
}


_SPACE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}  # a buffered write reports these with no path


def path_error(err: OSError) -> UserError | None:
    """The one-line form of an OSError the user fixes by choosing another path or freeing space."""
    fix = _PATH_FIXES.get(err.errno)
    if fix is None or (err.filename is None and err.errno not in _SPACE_ERRORS):
        return None  # a refusal that names no path (a socket, a signal, a lock) is a bug to see whole
    where = err.filename if err.filename is not None else "writing an output"
    return UserError(f"{where}: {err.strerror or os.strerror(err.errno)}", fix)


@contextlib.contextmanager
def writing_to(path: str | os.PathLike):
    """Name `path` in an output failure that names no file (a full disk seen by a buffered write)."""
    try:
        yield
    except OSError as err:
        if err.filename is None and err.errno in _PATH_FIXES:
            err.filename = str(path)
        raise


def check_writable(path: str | os.PathLike, what: str) -> None:
    """Fail before any work when `path` (a directory to be created, or an existing one) cannot be
    written: a file in the way, a read-only or full file system, no permission. Creates nothing: the
    probe file goes into the nearest existing directory and is removed."""
    path = Path(path)
    existing = next(p for p in [path, *path.parents] if p.exists() or p == Path(p.anchor or "."))
    if existing.exists() and not existing.is_dir():
        if existing == path:
            raise UserError(f"{what} {path} exists and is not a directory", "name a directory")
        raise UserError(f"{what} {path} cannot be written ({existing} is not a directory)", "choose another path")
    try:
        handle, probe = tempfile.mkstemp(prefix=".write_test.", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise UserError(f"{what} {path} cannot be written ({existing}: {err.strerror or err})",
                        _PATH_FIXES.get(err.errno, "choose a path you can write")) from None


def run_guarded(function, argv: list[str]) -> int:
    """User mistakes become one line on stderr and exit status 2, not a traceback: a UserError, or an
    output the system refused (read-only, full, a file in the way). It lives here, not in cli.py,
    because every entry point uses it and cli.py imports train.py."""
    try:
        return function(argv) or 0
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        problem = path_error(err)
        if problem is None:
            raise
        print(f"error: {problem}", file=sys.stderr)
        return problem.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
