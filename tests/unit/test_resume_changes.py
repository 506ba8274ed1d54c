"""What a --resume may change: the comparison of the saved run record with the new one (refusals
and notes), the model-shape backstop, and the config history that keeps every session's config."""
import json

import pytest
import yaml

from fast_electra_ds import checkpointing as ckpt
from fast_electra_ds.config.resume_changes import compare, record, refusal_message
from fast_electra_ds.config.run_config import load_config, save_config
from fast_electra_ds.errors import UserError

TOKENS = {"vocab_size": 2000, "fingerprint": "abc123"}
DS = {"train_batch_size": 8}


def session(*overrides, tokens=TOKENS, ds=DS):
    return record(load_config([], ["model.preset=tiny", "data.path=/d/one", *overrides]).to_dict(), tokens, ds)


def test_an_unchanged_resume_has_nothing_to_say():
    assert compare(session(), session()) == ([], [])


@pytest.mark.parametrize("override, field, saved, now", [
    ("data.seq_len=64", "data.seq_len", 128, 64),
    ("model.hidden_size=128", "model.hidden_size", 64, 128),
    ("model.preset=small", "model.num_hidden_layers", 2, 12),  # a preset is compared through the sizes it resolves to
    ("method=electra", "method", "fast", "electra"),
    ("model.corrective_lm=true", "model.corrective_lm", False, True),
])
def test_what_shapes_the_weights_or_the_ids_is_refused(override, field, saved, now):
    refusals, _ = compare(session(), session(override))
    assert [(r.field, r.saved, r.now) for r in refusals][:1] == [(field, saved, now)]


def test_the_same_sizes_spelled_another_way_are_the_same_model():
    assert compare(session(), session("model.preset=small", "model.num_hidden_layers=2", "model.hidden_size=64", "model.embedding_size=64",
                                      "model.num_attention_heads=2", "model.intermediate_size=128"))[0] == []


def test_another_tokenizer_is_refused_by_its_content_and_a_moved_one_is_not():
    other = {**TOKENS, "fingerprint": "fff999"}  # the same size, another vocabulary
    refusals, _ = compare(session(), session(tokens=other))
    assert [r.field for r in refusals] == ["tokenizer fingerprint"]
    problem, fix = refusal_message(refusals, "runs/x")
    assert "abc123" in problem and "fff999" in problem and "new train.out_dir" in fix and "runs/x/tokenizer" in fix
    refusals, notes = compare(session(), session("data.tokenizer=/elsewhere/tok"))
    assert refusals == [] and notes == ["data.tokenizer changed from  to /elsewhere/tok: the same vocabulary (equal fingerprint) from another directory"]


def test_data_and_batch_changes_are_allowed_with_a_note_on_what_they_mean():
    refusals, notes = compare(session(), session("data.path=/d/two", "optim.lr=1e-4", ds={"train_batch_size": 16}))
    assert refusals == []
    assert any(n.startswith("data.path changed from /d/one to /d/two: training goes on over the new data") for n in notes)
    assert any(n.startswith("global batch changed from 8 to 16: the sample order changes from this step") for n in notes)
    assert any(n.startswith("optim.lr changed from None to 0.0001") for n in notes)
    assert len(notes) == 3


def test_the_run_layout_changes_quietly():
    assert compare(session(), session("train.log_every=5", "train.keep_last=4", "train.out_dir=elsewhere")) == ([], [])


def test_refusal_names_every_field_and_how_to_revert():
    refusals, _ = compare(session(), session("data.seq_len=64", "model.hidden_size=128"))
    problem, fix = refusal_message(refusals, "runs/x")
    assert "model.hidden_size was 64, now 128" in problem and "data.seq_len was 128, now 64" in problem
    assert "model.hidden_size=64" in fix and "data.seq_len=128" in fix


def test_an_older_run_directory_without_some_records_compares_what_it_has():
    saved = record(load_config([], ["model.preset=tiny"]).to_dict(), None, None)
    assert compare(saved, session())[0] == []


def write_run(run_dir, *overrides):
    run_dir.mkdir(exist_ok=True)
    save_config(load_config([], ["model.preset=tiny", "data.path=/d/one", *overrides]), run_dir / "config.yaml")
    (run_dir / "tokens.json").write_text(json.dumps(TOKENS))
    (run_dir / "ds_config.json").write_text(json.dumps(DS))


def test_check_resume_reads_the_run_directory(tmp_path):
    write_run(tmp_path)
    new = load_config([], ["model.preset=tiny", "data.path=/d/two"]).to_dict()
    assert [n.split(":")[0] for n in ckpt.check_resume(tmp_path, new, TOKENS, DS)] == ["data.path changed from /d/one to /d/two"]
    with pytest.raises(UserError, match="data.seq_len was 128, now 32"):
        ckpt.check_resume(tmp_path, load_config([], ["model.preset=tiny", "data.seq_len=32"]).to_dict(), TOKENS, DS)


def test_model_shapes_backstop_names_the_parameter(tmp_path):
    (tmp_path / ckpt.SHAPES).write_text(json.dumps({"a.weight": [4, 8], "b.bias": [8]}))
    ckpt.check_model_shapes(tmp_path, {"a.weight": [4, 8], "b.bias": [8]}, [])
    with pytest.raises(UserError, match=r"parameter a.weight: \[4, 8\] in the checkpoints, \[4, 16\] now; changed fields: generator.hidden_fraction"):
        ckpt.check_model_shapes(tmp_path, {"a.weight": [4, 16], "b.bias": [8]}, ["generator.hidden_fraction changed from 0.25 to 0.5: ..."])
    with pytest.raises(UserError, match="parameter c.weight: absent in the checkpoints"):
        ckpt.check_model_shapes(tmp_path, {"a.weight": [4, 8], "b.bias": [8], "c.weight": [2]}, [])


def test_history_keeps_every_session(tmp_path):
    config = load_config([], ["model.preset=tiny"]).to_dict()
    first = ckpt.write_history(tmp_path, config, DS, 0)
    second = ckpt.write_history(tmp_path, {**config, "method": "electra"}, DS, 0)  # the same second and step: a new name
    assert first != second and first.name.endswith("-step0.yaml")
    assert yaml.safe_load(first.read_text())["method"] == "fast" and yaml.safe_load(second.read_text())["method"] == "electra"
    assert yaml.safe_load(first.read_text())["ds_config"] == DS
