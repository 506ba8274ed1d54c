"""Every subcommand, given an output it cannot write or an input that is not there, stops with one
line `error: <problem>; <fix>` and a non-zero status, no traceback, and leaves nothing half-written.
The unwritable output is a path under a regular file: it fails for root too (chmod does not)."""
import resource
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT, cpu_env, run_cli, run_train_single

pytestmark = pytest.mark.integration


def assert_one_line(result, *fragments):
    assert result.returncode != 0, result.stdout[-2000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def inputs(prepared, corpus, tmp_path_factory):
    """A tiny model directory with its tokenizer, a GLUE_DIR, a run directory, and a file in the way."""
    import torch
    from transformers import ElectraConfig, ElectraForPreTraining

    from fast_electra_ds.finetune.rotten_tomatoes import write_sst2

    root = tmp_path_factory.mktemp("bad_paths")
    model = root / "model"
    shutil.copytree(prepared["tokenizer"], model)
    torch.manual_seed(0)
    ElectraForPreTraining(ElectraConfig(vocab_size=2000, embedding_size=32, hidden_size=32, num_hidden_layers=1, num_attention_heads=1,
                                        intermediate_size=64, max_position_embeddings=128)).save_pretrained(model)
    (root / "a_file").write_text("in the way\n")
    return {"model": model, "glue": write_sst2(root / "glue"), "blocked": root / "a_file" / "out", "corpus": corpus,
            "tokenizer": prepared["tokenizer"], "data": prepared["data"], "root": root}


def commands(x, out, missing):
    """Each subcommand with output `out`; `missing` replaces its main input."""
    train = ["--ds_config", "zero3.json", "--config", "tiny.yaml", "method=aux-mlm", "train.steps=1",
             f"data.path={missing or x['data']}", f"data.tokenizer={x['tokenizer']}", f"train.out_dir={out}"]
    return {
        "tokenizer": ["tokenizer", "--input", str(missing or x["corpus"]), "--out", str(out), "--vocab-size", "500"],
        "prepare": ["prepare", "--input", str(missing or x["corpus"]), "--tokenizer", str(x["tokenizer"]), "--out", str(out)],
        "export": ["export", str(missing or x["root"]), str(out)],
        "finetune": ["finetune", "--model", str(missing or x["model"]), "--task", "sst2", "--data", str(x["glue"]),
                     "--out", str(out), "--seeds", "1", "--no-progress"],
        "glue-data": ["glue-data", "rotten-tomatoes", str(out)],
        "train": train,
    }


def run(name, args):
    return run_train_single(args) if name == "train" else run_cli(args)


@pytest.mark.parametrize("name", ["tokenizer", "prepare", "export", "finetune", "glue-data", "train"])
def test_unwritable_output(inputs, name):
    line = assert_one_line(run(name, commands(inputs, inputs["blocked"], None)[name]), str(inputs["blocked"]))
    assert "a_file is " in line or "Not a directory" in line, line
    assert inputs["root"].joinpath("a_file").read_text() == "in the way\n"


@pytest.mark.parametrize("name", ["tokenizer", "prepare", "export", "finetune", "train"])  # glue-data reads only its package's data
def test_missing_input(inputs, tmp_path, name):
    missing = tmp_path / "not_there"
    assert_one_line(run(name, commands(inputs, tmp_path / "out", missing)[name]), str(missing))
    assert not (tmp_path / "out").exists() or name == "train"  # train creates train.out_dir before it reads data


def test_an_output_that_fills_up_midway_is_one_line_and_leaves_nothing(inputs, tmp_path):
    """A write that fails partway (here the file size limit, as a full disk would): one line that names
    the output, and no half-written dataset or temporary directory."""
    limit = 16 * 1024

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))  # Python ignores SIGXFSZ: writes fail with EFBIG

    out = tmp_path / "data"
    result = subprocess.run([sys.executable, "-m", "fast_electra_ds.cli", "prepare", "--input", str(inputs["corpus"]),
                             "--tokenizer", str(inputs["tokenizer"]), "--out", str(out)],
                            cwd=ROOT, env=cpu_env(), capture_output=True, text=True, timeout=300, preexec_fn=small_files)
    assert_one_line(result, str(out), "ulimit")
    assert list(tmp_path.iterdir()) == []
