"""Orphaned temporary directories beside an output: removed when provably dead (this host's pid gone,
or untouched past the bound), reported otherwise; nothing outside the project's names is touched."""
import os
import subprocess
import sys
import time

import pytest

from fast_electra_ds.runtime.temp_dirs import STALE_AFTER_S, clean_orphans, host_hash, temp_name, write_atomically


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def make(parent, name, files=1):
    path = parent / name
    path.mkdir()
    for i in range(files):
        (path / f"f{i}").write_text("x")
    return path


def age(path, seconds):
    old = time.time() - seconds
    for p in [path, *path.rglob("*")]:
        os.utime(p, (old, old))


def run(target, kinds=("export", "old")):
    said = []
    removed = clean_orphans(target, kinds, say=said.append)
    return removed, said


def test_a_dead_writer_on_this_host_is_removed_and_said(tmp_path):
    target = tmp_path / "hf"
    target.mkdir()
    orphan = make(tmp_path, f".hf.export-{dead_pid()}-{host_hash()}-abc_1234", files=3)
    removed, said = run(target)
    assert removed == [orphan] and not orphan.exists()
    assert len(said) == 1 and said[0].startswith(f"removed {orphan}") and "no longer runs" in said[0]


def test_a_running_writer_is_left_and_reported(tmp_path):
    target = tmp_path / "hf"
    mine = make(tmp_path, temp_name(target, "export") + "-zz12ab34")
    age(mine, 2 * STALE_AFTER_S)  # age does not matter when the pid proves it alive
    removed, said = run(target)
    assert removed == [] and mine.exists()
    assert len(said) == 1 and said[0].startswith(f"left {mine} alone") and f"process {os.getpid()} on this host still runs" in said[0]


def test_another_host_or_an_older_name_goes_only_after_the_bound(tmp_path):
    target = tmp_path / "ex1"
    other_host = make(tmp_path, f".ex1.export-{dead_pid()}-{host_hash('elsewhere')}-q1w2e3r4")
    legacy = make(tmp_path, ".ex1.export-k3j4h5g6")  # the mkdtemp name of an older version: no pid, no host
    removed, said = run(target)
    assert removed == [] and other_host.exists() and legacy.exists() and len(said) == 2
    assert all("another host or of an older version" in line for line in said)
    age(other_host, STALE_AFTER_S + 60)
    age(legacy, STALE_AFTER_S + 60)
    removed, said = run(target)
    assert sorted(removed) == sorted([other_host, legacy]) and not other_host.exists() and not legacy.exists()


def test_a_swapped_out_previous_output_stays_while_the_output_is_missing(tmp_path):
    target = tmp_path / "data"
    old = make(tmp_path, f".data.old-{dead_pid()}-{host_hash()}")
    removed, said = run(target, ("tmp", "old"))
    assert removed == [] and old.exists() and f"move {old} back to {target}" in said[0]
    target.mkdir()
    removed, said = run(target, ("tmp", "old"))
    assert removed == [old] and not old.exists()


def test_nothing_outside_the_names_is_touched(tmp_path):
    target = tmp_path / "hf"
    pid, host = dead_pid(), host_hash()
    keep = [make(tmp_path, name) for name in (".hf.export", f".hf2.export-{pid}-{host}", f"hf.export-{pid}-{host}", ".hf.exports-1",
                                              f".hf.tmp-{pid}-{host}", ".hf.export-UPPER")]
    (tmp_path / f".hf.export-{pid}-{host}-x1y2z3w4.txt").write_text("a file, not a directory")
    for path in keep:
        age(path, 10 * STALE_AFTER_S)
    removed, said = run(target)  # export and old only: a tmp name is another command's
    assert removed == [] and said == [] and all(p.exists() for p in keep)


def test_write_atomically_replaces_whole_or_leaves_the_old_file(tmp_path):
    target = tmp_path / "out.tsv"
    write_atomically(target, "old\n")
    write_atomically(target, b"new\n")
    assert target.read_text() == "new\n"

    def fails_halfway(handle):
        handle.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, fails_halfway)
    assert target.read_text() == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tsv"]  # no temporary file left behind
