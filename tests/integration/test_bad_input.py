"""Each user mistake gives one line `error: <problem>; <fix>`, exit status 2, no traceback."""
import json
import shutil

import pytest
from transformers import ElectraForMaskedLM, ElectraForPreTraining

from tests.helpers import ROOT, assert_user_error, launch, run_cli, run_train_single, tiny_electra_config, train_args

pytestmark = pytest.mark.integration


# --- text and shards ---------------------------------------------------------------------------------

def test_missing_input_file(tmp_path):
    assert_user_error(run_cli(["tokenizer", "--input", str(tmp_path / "nope.txt"), "--out", str(tmp_path / "tok")]), "nope.txt")


def test_empty_input_file(prepared, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    assert_user_error(run_cli(["prepare", "--input", str(empty), "--tokenizer", str(prepared["tokenizer"]), "--out", str(tmp_path / "d")]), "empty")
    assert not (tmp_path / "d").exists()


def test_undecodable_bytes_are_replaced_and_counted(prepared, tmp_path):
    text = tmp_path / "latin1.txt"
    text.write_bytes("caf\xe9 cr\xe8me is a dessert\n\nsecond document here\n".encode("latin-1"))
    result = run_cli(["prepare", "--input", str(text), "--tokenizer", str(prepared["tokenizer"]), "--out", str(tmp_path / "d")])
    assert result.returncode == 0, result.stderr[-2000:]
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["num_documents"] == 2 and meta["replaced_chars"] == 2


def test_truncated_shard(prepared, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(prepared["data"], data)
    binary = next(data.glob("*.bin"))
    binary.write_bytes(binary.read_bytes()[: binary.stat().st_size // 2])
    result = run_train_single(train_args({**prepared, "data": data}, tmp_path / "run", "method=aux-mlm"))
    assert_user_error(result, binary.stem, "prepare")


def test_shard_overwritten_in_place_with_out_of_range_ids(prepared, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(prepared["data"], data)
    binary = next(data.glob("*.bin"))
    binary.write_bytes(b"\xff" * binary.stat().st_size)  # the same size (the open-time checks pass), ids 65535
    result = run_train_single(train_args({**prepared, "data": data}, tmp_path / "run", "method=aux-mlm"))
    assert_user_error(result, f"shard {binary.stem}", "token id 65535", "prepare")


@pytest.mark.parametrize("corrupted", ["every token", "the second half"])
def test_out_of_range_ids_on_two_ranks_are_one_line_for_the_job(prepared, tmp_path, corrupted):
    """Found while reading, by one rank or by both at once: the job says it once (the rank that saw it
    first), and the other rank leaves quietly with the same status instead of adding "another rank of
    this job stopped"."""
    data = tmp_path / "data"
    shutil.copytree(prepared["data"], data)
    binary = next(data.glob("*.bin"))
    size = binary.stat().st_size
    if corrupted == "every token":
        binary.write_bytes(b"\xff" * size)
    else:  # the second half only: the ranks find it at different tokens, or one before the other
        binary.write_bytes(binary.read_bytes()[: size // 2] + b"\xff" * (size - size // 2))
    result = launch(train_args({**prepared, "data": data}, tmp_path / "run", "method=aux-mlm", "train.steps=20", "train.export=false"),
                    check=False)
    assert "another rank of this job stopped" not in result.stdout + result.stderr
    assert_user_error(result, f"shard {binary.stem}", "token id 65535", "prepare")


def test_corrupted_index(prepared, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(prepared["data"], data)
    index = next(data.glob("*.idx"))
    index.write_bytes(b"garbage!" * 8)
    assert_user_error(run_train_single(train_args({**prepared, "data": data}, tmp_path / "run", "method=aux-mlm")), index.stem)


# --- configuration ------------------------------------------------------------------------------------

def test_unknown_config_key_names_it_and_lists_valid_ones(prepared, tmp_path):
    result = run_train_single(train_args(prepared, tmp_path / "run", "train.stpes=3"))
    assert_user_error(result, "train.stpes", "steps", "out_dir")


def test_missing_ds_config(prepared, tmp_path):
    assert_user_error(run_train_single(train_args(prepared, tmp_path / "run", ds_config=tmp_path / "none.json")), "none.json")


def test_inconsistent_batch_sizes(prepared, tmp_path):
    ds = json.loads((ROOT / "ds_configs/zero3.json").read_text())
    ds.update(train_batch_size=7)
    path = tmp_path / "ds.json"
    path.write_text(json.dumps(ds))
    result = run_train_single(train_args(prepared, tmp_path / "run", "method=aux-mlm", ds_config=path))
    assert_user_error(result, "train_batch_size 7", "world size 1")


def test_resume_without_checkpoint(prepared, tmp_path):
    result = run_train_single(train_args(prepared, tmp_path / "run", "method=aux-mlm", "--resume"))
    assert_user_error(result, "no complete checkpoint")


# --- the auxiliary model --------------------------------------------------------------------------------

def test_aux_directory_without_mlm_head(prepared, tmp_path):
    aux = tmp_path / "disc"
    ElectraForPreTraining(tiny_electra_config(2000)).save_pretrained(aux)
    result = run_train_single(train_args(prepared, tmp_path / "run", "method=fast", f"aux.path={aux}"))
    assert_user_error(result, "no masked-LM head")


def test_aux_missing_head_weights(prepared, tmp_path):
    """A masked-LM config over weights that lack the head (e.g. a renamed discriminator)."""
    aux = tmp_path / "headless"
    ElectraForPreTraining(tiny_electra_config(2000)).save_pretrained(aux)
    config = json.loads((aux / "config.json").read_text())
    config["architectures"] = ["ElectraForMaskedLM"]
    (aux / "config.json").write_text(json.dumps(config))
    result = run_train_single(train_args(prepared, tmp_path / "run", "method=fast", f"aux.path={aux}"))
    assert_user_error(result, "generator")


def test_aux_vocabulary_size_mismatch(prepared, tmp_path):
    aux = tmp_path / "aux3000"
    ElectraForMaskedLM(tiny_electra_config(3000)).save_pretrained(aux)
    result = run_train_single(train_args(prepared, tmp_path / "run", "method=fast", f"aux.path={aux}"))
    assert_user_error(result, "vocabulary mismatch", "3000", "2000")


def test_aux_tokenizer_mismatch(prepared, corpus, tmp_path):
    """Same vocabulary size, different vocabulary: a tokenizer trained on other text."""
    from fast_electra_ds.data.tokenizer import train_tokenizer

    other = tmp_path / "other.txt"
    other.write_text("\n\n".join(corpus.read_text().split("\n\n")[::-1][:30]))
    aux = tmp_path / "aux_other_tok"
    train_tokenizer([str(other)], aux, vocab_size=2000)
    ElectraForMaskedLM(tiny_electra_config(2000)).save_pretrained(aux)
    result = run_train_single(train_args(prepared, tmp_path / "run", "method=fast", f"aux.path={aux}"))
    assert_user_error(result, "differs from the data's tokenizer")


def test_fast_without_aux_path(prepared, tmp_path):
    assert_user_error(run_train_single(train_args(prepared, tmp_path / "run", "method=fast")), "aux.path")


def test_unknown_method(prepared, tmp_path):
    assert_user_error(run_train_single(train_args(prepared, tmp_path / "run", "method=nope")), "unknown method", "fast")
