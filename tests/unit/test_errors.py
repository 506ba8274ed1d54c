"""run_guarded turns an output the system refuses (read-only, full, over quota, a file in the way)
into one line naming the path and the fix; any other OSError keeps its traceback."""
import errno

import pytest

from fast_electra_ds.errors import UserError, check_writable, run_guarded, writing_to


def refuse(code, filename=None):
    def function(argv):
        raise OSError(code, "refused", filename) if filename else OSError(code, "refused")
    return function


@pytest.mark.parametrize("code, fix", [(errno.EROFS, "writable file system"), (errno.ENOSPC, "free space"),
                                       (errno.EDQUOT, "quota"), (errno.EACCES, "permissions"), (errno.ENOTDIR, "is a file")])
def test_output_refusals_are_one_line(capsys, code, fix):
    assert run_guarded(refuse(code, "/data/out/shard_0.bin"), []) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: /data/out/shard_0.bin: refused; ") and fix in err, err


def test_a_refusal_without_a_file_names_the_output_being_written(capsys):
    def function(argv):
        with writing_to("/data/out"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert run_guarded(function, []) == 2
    assert capsys.readouterr().err.startswith("error: /data/out: No space left on device; free space there")


def test_other_os_errors_are_not_hidden():
    with pytest.raises(FileNotFoundError):
        run_guarded(refuse(errno.ENOENT, "/x"), [])
    with pytest.raises(ConnectionResetError):
        run_guarded(refuse(errno.ECONNRESET), [])
    with pytest.raises(PermissionError):  # a refusal naming no path (os.kill, a socket's bind) is a bug, not an output
        run_guarded(refuse(errno.EPERM), [])
    with pytest.raises(PermissionError):
        run_guarded(refuse(errno.EACCES), [])


def test_check_writable_creates_nothing(tmp_path):
    check_writable(tmp_path / "a" / "b", "--out")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "f").write_text("")
    with pytest.raises(UserError, match="exists and is not a directory"):
        check_writable(tmp_path / "f", "--out")
    with pytest.raises(UserError, match=r"f is not a directory"):
        check_writable(tmp_path / "f" / "x", "--out")
