"""`fast-electra prepare` refuses input that is mostly not text, with one line and a settable limit,
while a few undecodable bytes (Latin-1 in a UTF-8 corpus) stay accepted and counted; a directory as
--input is named as such."""
import json
import random

from tests.helpers import run_cli


def one_error(result, *fragments):
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_random_bytes_are_refused_unless_the_limit_is_raised(prepared, tmp_path):
    noise = tmp_path / "noise.txt"
    noise.write_bytes(random.Random(0).randbytes(20_000))  # the repro: 20 KB of random bytes
    args = ["prepare", "--input", str(noise), "--tokenizer", str(prepared["tokenizer"]), "--out", str(tmp_path / "d")]
    one_error(run_cli(args), "not text", "noise.txt", "--max-non-text-fraction")
    assert not (tmp_path / "d").exists()
    result = run_cli(args + ["--max-non-text-fraction", "1"])
    assert result.returncode == 0, result.stderr[-2000:]
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["replaced_chars"] + meta["control_chars"] > 5_000


def test_latin1_text_is_accepted_and_counted(prepared, tmp_path):
    text = tmp_path / "latin1.txt"
    text.write_bytes(("Le caf\xe9 et la cr\xe8me br\xfbl\xe9e sont des desserts fran\xe7ais.\n\n" * 50).encode("latin-1"))
    result = run_cli(["prepare", "--input", str(text), "--tokenizer", str(prepared["tokenizer"]), "--out", str(tmp_path / "d")])
    assert result.returncode == 0, result.stderr[-2000:]
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["num_documents"] == 50 and meta["replaced_chars"] == 250 and meta["control_chars"] == 0


def test_a_directory_as_input_is_named_as_one(prepared, tmp_path):
    (tmp_path / "texts").mkdir()
    result = run_cli(["prepare", "--input", str(tmp_path / "texts"), "--tokenizer", str(prepared["tokenizer"]), "--out", str(tmp_path / "d")])
    one_error(result, "is a directory", "texts/*.txt")
