"""Fine-tuning end to end: a tiny ELECTRA saved with save_pretrained (plus a sentencepiece tokenizer
trained on the Rotten Tomatoes training text) learns the real sentiment task through the CLI and
beats the majority class; a seed reproduces its result; several tasks give the Average line."""
import json
from pathlib import Path

import pytest

from fast_electra_ds.errors import UserError
from fast_electra_ds.finetune import run, run_tasks
from fast_electra_ds.finetune.rotten_tomatoes import write_sst2
from tests.helpers import run_cli

# A randomly initialised model (no pre-training): nothing below the head is worth protecting, so no
# layer-wise decay, and a high LR. initializer_range 0.1 instead of ELECTRA's 0.02 lets the signal
# through the random layer at once; with 0.02 some seeds stayed at the majority class for 4 epochs
# (measured). These settings gave 63.1/66.2/63.4/64.1/62.7/64.8% for seeds 1/2/4/5/6/7 against a
# 58.1% majority class (1291 dev snippets, so ~1.4 points of noise); the test asks for +3 points.
TINY_SETTINGS = ["lr=2e-3", "layer_decay=1", "epochs=4", "max_seq_len=64"]
TRAIN_EXAMPLES = 3000


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory):
    """(GLUE_DIR with the RT snippets as SST-2, a tiny exported-style ELECTRA directory)."""
    import torch
    from transformers import ElectraConfig, ElectraForPreTraining

    from fast_electra_ds.data.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("finetune")
    glue = write_sst2(root / "glue")
    text = root / "train_text.txt"
    lines = (glue / "SST-2" / "train.tsv").read_text().splitlines()[1:]
    text.write_text("\n".join(line.split("\t")[0] for line in lines))
    model_dir = root / "tiny"
    train_tokenizer([text], model_dir, vocab_size=2000)
    torch.manual_seed(0)
    config = ElectraConfig(vocab_size=2000, embedding_size=64, hidden_size=64, num_hidden_layers=1, num_attention_heads=2,
                           intermediate_size=256, max_position_embeddings=128, pad_token_id=0, initializer_range=0.1)
    ElectraForPreTraining(config).save_pretrained(model_dir)
    return glue, model_dir


def test_cli_finetunes_and_beats_the_majority_class(sentiment, tmp_path):
    glue, model_dir = sentiment
    out = tmp_path / "out"
    result = run_cli(["finetune", "--model", str(model_dir), "--task", "sst2", "--data", str(glue), "--out", str(out),
                      "--seeds", "1", "2", "--max-train-examples", str(TRAIN_EXAMPLES), "--no-progress",
                      "--set", *TINY_SETTINGS])
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((out / "sst2" / "summary.json").read_text())
    assert summary["task"] == "sst2" and summary["metric"] == "accuracy" and summary["model"] == str(model_dir)
    assert set(summary["per_seed"]) == {"1", "2"} and summary["train_examples"] == TRAIN_EXAMPLES
    assert summary["dev_examples"] == {"dev": 1291}
    assert summary["recipe"]["lr"] == 2e-3 and summary["recipe"]["name"] == "small"  # auto: hidden 64 -> small
    assert summary["recipe"]["batch_size"] == 32 and summary["recipe"]["warmup_fraction"] == 0.1
    accuracies = [seed["accuracy"] for seed in summary["per_seed"].values()]
    assert summary["main_median"] == summary["median"]["accuracy"] == pytest.approx(sum(accuracies) / 2)
    assert summary["majority_baseline"] == pytest.approx(750 / 1291)  # dev's fresh share; fresh is train's majority
    for accuracy in accuracies:  # each seed, by a margin well above the dev set's noise (~1.4 points)
        assert accuracy > summary["majority_baseline"] + 0.03, summary["per_seed"]
    assert summary["seeds_at_majority"] == []
    for stats in summary["per_seed_stats"].values():  # it learned: below the loss of predicting the label frequencies
        assert stats["final_train_loss"] < summary["prior_train_loss"] - 0.02
    markdown = (out / "sst2" / "summary.md").read_text()
    assert "| **median** |" in markdown and "(predicting the label frequencies: " in markdown and "failed runs" not in markdown
    assert "median" in result.stdout


def test_prior_loss_is_the_entropy_of_the_training_labels():
    import math

    import numpy as np

    from fast_electra_ds.finetune.runner import prior_loss
    from fast_electra_ds.finetune.tasks import GLUE_TASKS

    sst2 = GLUE_TASKS["sst2"]
    assert prior_loss(sst2, np.array([0, 1, 1, 1])) == pytest.approx(-(0.25 * math.log(0.25) + 0.75 * math.log(0.75)))
    assert prior_loss(sst2, np.array([1, 1])) == 0.0
    assert prior_loss(GLUE_TASKS["stsb"], np.array([0.5, 3.0], dtype=np.float32)) is None


def test_a_seed_reproduces_its_result(sentiment, tmp_path):
    glue, model_dir = sentiment
    settings = dict(max_train_examples=256, max_dev_examples=200, progress=False)
    first = run(model_dir, "sst2", glue, tmp_path / "a", [7], "auto", ["epochs=1", "lr=2e-3"], **settings)
    second = run(model_dir, "sst2", glue, tmp_path / "b", [7], "auto", ["epochs=1", "lr=2e-3"], **settings)
    other = run(model_dir, "sst2", glue, tmp_path / "c", [8], "auto", ["epochs=1", "lr=2e-3"], **settings)
    assert first["per_seed_stats"]["7"]["final_train_loss"] == second["per_seed_stats"]["7"]["final_train_loss"]
    assert first["per_seed"] == second["per_seed"]
    assert first["per_seed_stats"]["7"]["final_train_loss"] != other["per_seed_stats"]["8"]["final_train_loss"]


def test_several_tasks_and_a_custom_regression_task(sentiment, tmp_path):
    """sst2 plus a custom task file (regression on the same snippets) -> OUT/summary.json with the
    papers' Average; exercises the regression head and the custom-task path."""
    glue, model_dir = sentiment
    task_file = tmp_path / "fresh_score.json"
    task_file.write_text(json.dumps({"name": "fresh-score", "train": str(glue / "SST-2" / "train.tsv"),
                                     "dev": str(glue / "SST-2" / "dev.tsv"), "text_a": "sentence", "label": "label",
                                     "labels": "regression", "metric": ["pearson", "spearman"]}))
    combined = run_tasks(model_dir, ["sst2", str(task_file)], glue, tmp_path / "out", [1], "small", ["epochs=1"],
                         max_train_examples=128, max_dev_examples=128, progress=False)
    assert set(combined["tasks"]) == {"sst2", "fresh-score"}
    regression = json.loads((tmp_path / "out" / "fresh-score" / "summary.json").read_text())
    assert regression["metric"] == "pearson" and set(regression["median"]) == {"pearson", "spearman"}
    assert regression["majority_baseline"] == 0.0  # a constant prediction has no correlation
    mains = [combined["tasks"][name]["main_median"] for name in ("sst2", "fresh-score")]
    assert combined["average"] == pytest.approx(sum(mains) / 2)
    assert "Average" in (tmp_path / "out" / "summary.md").read_text()


def test_bad_model_directory_and_recipe_key(sentiment, tmp_path):
    glue, model_dir = sentiment
    result = run_cli(["finetune", "--model", str(tmp_path / "nope"), "--task", "sst2", "--data", str(glue), "--out", str(tmp_path)])
    assert result.returncode == 2 and result.stderr.strip().splitlines()[-1].startswith(f"error: model directory {tmp_path / 'nope'} does not exist")
    (tmp_path / "no_tok").mkdir()
    (tmp_path / "no_tok" / "config.json").write_text((model_dir / "config.json").read_text())
    with pytest.raises(UserError, match="no_tok holds no weights"):
        run(tmp_path / "no_tok", "sst2", glue, tmp_path / "o", [1])
    (tmp_path / "no_tok" / "model.safetensors").write_bytes((model_dir / "model.safetensors").read_bytes())
    with pytest.raises(UserError, match="no_tok holds no tokenizer"):
        run(tmp_path / "no_tok", "sst2", glue, tmp_path / "o", [1])
    with pytest.raises(UserError, match="unknown recipe key 'warmup'"):
        run(model_dir, "sst2", glue, tmp_path / "o", [1], overrides=["warmup=0.1"])
    with pytest.raises(UserError, match="max_seq_len 512 exceeds the model's 128 positions"):
        run(model_dir, "sst2", glue, tmp_path / "o", [1], overrides=["max_seq_len=512"])


def test_sentence_pairs_mrpc_trains_in_both_orders(sentiment, tmp_path):
    """A pair task in MRPC's layout (built from snippet pairs): F1 + accuracy, segment ids, and
    ELECTRA's double_unordered (each pair also swapped) doubling the updates unless switched off."""
    glue, model_dir = sentiment
    lines = (glue / "SST-2" / "dev.tsv").read_text().splitlines()[1:41]
    rows = [line.split("\t") for line in lines]
    mrpc = tmp_path / "glue" / "MRPC"
    mrpc.mkdir(parents=True)
    body = "".join(f"{int(a[1] == b[1])}\t{i}\t{i + 1}\t{a[0]}\t{b[0]}\n" for i, (a, b) in enumerate(zip(rows, rows[1:])))
    for name in ("train.tsv", "dev.tsv"):
        (mrpc / name).write_text("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n" + body)
    settings = dict(max_train_examples=None, progress=False)
    both = run(model_dir, "mrpc", tmp_path / "glue", tmp_path / "a", [1], "small", ["epochs=1", "batch_size=8"], **settings)
    once = run(model_dir, "mrpc", tmp_path / "glue", tmp_path / "b", [1], "small", ["epochs=1", "batch_size=8", "double_unordered=0"], **settings)
    assert both["train_examples"] == once["train_examples"] == 39
    assert both["trained_in_both_orders"] and not once["trained_in_both_orders"]
    assert both["per_seed_stats"]["1"]["steps"] == 10 and once["per_seed_stats"]["1"]["steps"] == 5
    assert set(both["median"]) == {"accuracy", "f1"} and both["metric"] == "accuracy"


def test_pairs_get_segment_ids_when_the_model_has_them(sentiment):
    from fast_electra_ds.finetune.tasks import Split
    from fast_electra_ds.finetune.trainer import encode, load_tokenizer

    _, model_dir = sentiment
    tokenizer = load_tokenizer(model_dir)
    split = Split(path=model_dir, text_a=["good film"], text_b=["bad one"], labels=[1])
    encoded = encode(tokenizer, split, 64, segment_ids=True)
    ids, types = encoded.input_ids[0], encoded.token_type_ids[0]
    second = ids.index(tokenizer.sep_token_id) + 1  # [CLS] a [SEP] | b [SEP]
    assert types == [0] * second + [1] * (len(ids) - second) and ids[0] == tokenizer.cls_token_id
    assert encode(tokenizer, split, 64, segment_ids=False).token_type_ids is None


def test_saves_the_best_model_and_writes_glue_submission_predictions(sentiment, tmp_path):
    """--save-model best keeps the best epoch's model per task and seed (loadable, with its tokenizer);
    a test.tsv in GLUE's layout is predicted into SST-2.tsv (index<TAB>prediction) by that model."""
    import shutil

    import torch
    from transformers import AutoModelForSequenceClassification

    from fast_electra_ds.finetune.trainer import encode, load_tokenizer, padding_collator, predict
    from fast_electra_ds.finetune.tasks import Split

    glue, model_dir = sentiment
    shutil.copytree(glue / "SST-2", tmp_path / "glue" / "SST-2")
    dev_rows = [line.split("\t") for line in (glue / "SST-2" / "dev.tsv").read_text().splitlines()[1:31]]
    (tmp_path / "glue" / "SST-2" / "test.tsv").write_text("index\tsentence\n" + "".join(f"{100 + i}\t{row[0]}\n" for i, row in enumerate(dev_rows)))
    summary = run(model_dir, "sst2", tmp_path / "glue", tmp_path / "out", [3], "auto", ["epochs=3", "lr=2e-3", "max_seq_len=64"],
                  max_train_examples=300, max_dev_examples=200, progress=False, save="best")
    stats = summary["per_seed_stats"]["3"]
    saved = tmp_path / "out" / "sst2" / "seed_3" / "model"
    assert stats["saved_model"] == str(saved) and stats["best_epoch"] in (1, 2, 3)
    assert stats["best_metrics"]["accuracy"] >= summary["per_seed"]["3"]["accuracy"]  # the end of training is a candidate
    assert stats["saved"] == f"best (epoch {stats['best_epoch']})"

    lines = (tmp_path / "out" / "sst2" / "seed_3" / "SST-2.tsv").read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 31
    ids, labels = zip(*(line.split("\t") for line in lines[1:]))
    assert list(ids) == [str(100 + i) for i in range(30)] and set(labels) <= {"0", "1"}

    model = AutoModelForSequenceClassification.from_pretrained(saved)  # the saved model gives the same predictions
    tokenizer = load_tokenizer(saved)
    encoded = encode(tokenizer, Split(path=saved, text_a=[row[0] for row in dev_rows], text_b=None, labels=[0] * 30), 64)
    again = predict(model, encoded, padding_collator(tokenizer, saved), 16, False, torch.device("cpu"), None)
    assert [str(p) for p in again] == list(labels)
    assert "test-set predictions" in (tmp_path / "out" / "sst2" / "summary.md").read_text()

    (tmp_path / "foreign" / "sst2" / "seed_3" / "model").mkdir(parents=True)  # not ours: never replaced
    with pytest.raises(UserError, match="is not a model saved by fast-electra finetune"):
        run(model_dir, "sst2", tmp_path / "glue", tmp_path / "foreign", [3], "auto", ["epochs=1"], max_train_examples=32,
            max_dev_examples=32, progress=False, save="last")


def test_random_init_is_the_same_architecture_without_the_weights(sentiment, tmp_path):
    import torch

    from fast_electra_ds.finetune.trainer import load_classifier

    _, model_dir = sentiment
    torch.manual_seed(0)
    pretrained, random = load_classifier(model_dir, 2), load_classifier(model_dir, 2, init="random")
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(pretrained) == shapes(random)
    name = "electra.embeddings.word_embeddings.weight"
    assert not torch.equal(pretrained.state_dict()[name], random.state_dict()[name])
    glue, _ = sentiment
    result = run_cli(["finetune", "--model", str(model_dir), "--task", "sst2", "--data", str(glue), "--out", str(tmp_path / "r"),
                      "--seeds", "1", "--init", "random", "--max-train-examples", "64", "--max-dev-examples", "64", "--no-progress",
                      "--set", "epochs=1"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads((tmp_path / "r" / "sst2" / "summary.json").read_text())["init"] == "random"
    assert "random initialisation" in (tmp_path / "r" / "sst2" / "summary.md").read_text()


def test_pairs_are_padded_to_the_longest_of_the_batch(sentiment):
    """DataCollatorWithPadding: right padding with the pad id, mask 0 and segment 0 on the padding."""
    import torch

    from fast_electra_ds.finetune.tasks import Split
    from fast_electra_ds.finetune.trainer import collate, encode, load_tokenizer, padding_collator

    _, model_dir = sentiment
    tokenizer = load_tokenizer(model_dir)
    encoded = encode(tokenizer, Split(path=model_dir, text_a=["good film", "a long and rather dull film"], text_b=["bad", "ok"], labels=[1, 0]), 64)
    short, long = (encoded.input_ids[i] for i in (0, 1))
    batch = collate(padding_collator(tokenizer, model_dir), encoded, [0, 1], torch.device("cpu"))
    pad = len(long) - len(short)
    assert pad > 0 and batch["input_ids"].shape == (2, len(long))
    assert batch["input_ids"][0].tolist() == short + [tokenizer.pad_token_id] * pad and batch["input_ids"][1].tolist() == long
    assert batch["attention_mask"].tolist() == [[1] * len(short) + [0] * pad, [1] * len(long)]
    assert batch["token_type_ids"][0].tolist() == encoded.token_type_ids[0] + [0] * pad
    assert "token_type_ids" not in collate(padding_collator(tokenizer, model_dir), encode(tokenizer, Split(
        path=model_dir, text_a=["x"], text_b=None, labels=[0]), 64, segment_ids=False), [0], torch.device("cpu"))


def test_the_model_says_the_task_labels_and_dev_predictions_are_saved(sentiment, tmp_path):
    """A custom task's label names reach the fine-tuned model's config (id2label / label2id, so a
    pipeline says them); each seed's dev predictions are saved beside its scores and reproduce them."""
    from transformers import AutoConfig

    glue, model_dir = sentiment
    rows = [line.split("\t") for line in (glue / "SST-2" / "dev.tsv").read_text().splitlines()[1:]]
    names = {"0": "rotten", "1": "fresh"}
    for split, part in (("train", rows[:200]), ("dev", rows[200:260])):
        (tmp_path / f"{split}.tsv").write_text("sentence\tlabel\n" + "".join(f"{text}\t{names[label]}\n" for text, label in part))
    task_file = tmp_path / "reviews.yaml"
    task_file.write_text("name: reviews\ntrain: train.tsv\ndev: dev.tsv\ntext_a: sentence\nlabel: label\n"
                         "labels: [rotten, fresh]\nmetric: accuracy\n")
    summary = run(model_dir, str(task_file), None, tmp_path / "out", [2], "auto", ["epochs=1", "lr=2e-3", "max_seq_len=64"],
                  progress=False, save="last")
    saved = AutoConfig.from_pretrained(tmp_path / "out" / "reviews" / "seed_2" / "model")
    assert saved.id2label == {0: "rotten", 1: "fresh"} and saved.label2id == {"rotten": 0, "fresh": 1}

    path = tmp_path / "out" / "reviews" / "seed_2" / "dev_predictions.tsv"
    assert summary["per_seed_stats"]["2"]["dev_predictions"] == [str(path)]
    header, *lines = path.read_text().splitlines()
    assert header == "index\ttext_a\tlabel\tprediction" and len(lines) == 60
    table = [line.split("\t") for line in lines]
    assert [int(r[0]) for r in table] == list(range(60)) and [r[1] for r in table] == [row[0] for row in rows[200:260]]
    assert [r[2] for r in table] == [names[row[1]] for row in rows[200:260]] and {r[3] for r in table} <= {"rotten", "fresh"}
    assert sum(r[2] == r[3] for r in table) / 60 == pytest.approx(summary["per_seed"]["2"]["accuracy"])
    assert "dev-set predictions" in (tmp_path / "out" / "reviews" / "summary.md").read_text()


def test_the_saved_best_model_has_its_own_dev_predictions(sentiment, tmp_path):
    """--save-model best keeps the best epoch's weights; dev_predictions_best.tsv are that model's and
    reproduce its metrics, while dev_predictions.tsv stay the reported (final) model's."""
    glue, model_dir = sentiment
    summary = run(model_dir, "sst2", glue, tmp_path / "out", [1], "auto", ["epochs=3", "lr=2e-3", "max_seq_len=64"],
                  progress=False, save="best", max_train_examples=200, max_dev_examples=60)
    stats = summary["per_seed_stats"]["1"]
    paths = {Path(p).name: Path(p) for p in stats["dev_predictions"]}
    assert sorted(paths) == ["dev_predictions.tsv", "dev_predictions_best.tsv"]

    def accuracy(name):
        table = [line.split("\t") for line in paths[name].read_text().splitlines()[1:]]
        return sum(r[-2] == r[-1] for r in table) / len(table)

    assert accuracy("dev_predictions_best.tsv") == pytest.approx(stats["best_metrics"]["accuracy"])
    assert accuracy("dev_predictions.tsv") == pytest.approx(summary["per_seed"]["1"]["accuracy"])


def test_mean_pooling_feeds_the_head_the_mean_over_tokens_and_ignores_padding(sentiment):
    """pooling=mean: the model's own head reads the mean of the final states over the real tokens, so
    padding a batch longer changes nothing; the first token's state is no longer what it reads."""
    import torch

    from fast_electra_ds.finetune.trainer import MeanPooled, load_classifier

    _, model_dir = sentiment
    torch.manual_seed(0)
    model = load_classifier(model_dir, 2, pooling="mean").eval()
    assert isinstance(model, MeanPooled)
    ids = torch.tensor([[1, 5, 6, 7, 2]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
        states = model.model.base_model(input_ids=ids, attention_mask=mask).last_hidden_state
        by_hand = model.model.classifier(states.mean(1, keepdim=True))
        padded = model(input_ids=torch.cat([ids, torch.zeros(1, 3, dtype=torch.long)], 1),
                       attention_mask=torch.cat([mask, torch.zeros(1, 3, dtype=torch.long)], 1)).logits
        first_token = model.model(input_ids=ids, attention_mask=mask).logits  # the plain model reads [CLS]
    torch.testing.assert_close(logits, by_hand)
    torch.testing.assert_close(padded, logits, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(first_token, logits)


def test_mean_pooling_is_saved_in_the_config_and_becomes_the_models_default(sentiment, tmp_path):
    """A model fine-tuned with --set pooling=mean is saved with fast_electra_pooling=mean; fine-tuning
    that saved model again uses mean pooling without being told, and --set pooling=cls still wins."""
    glue, model_dir = sentiment
    first = run(model_dir, "sst2", glue, tmp_path / "first", [1], "auto", ["epochs=1", "pooling=mean"],
                max_train_examples=32, max_dev_examples=32, progress=False, save="last")
    assert first["recipe"]["pooling"] == "mean"
    saved = tmp_path / "first" / "sst2" / "seed_1" / "model"
    assert json.loads((saved / "config.json").read_text())["fast_electra_pooling"] == "mean"
    again = run(saved, "sst2", glue, tmp_path / "again", [1], "auto", ["epochs=1"], max_train_examples=32, max_dev_examples=32, progress=False)
    assert again["recipe"]["pooling"] == "mean"
    overridden = run(saved, "sst2", glue, tmp_path / "cls", [1], "auto", ["epochs=1", "pooling=cls"], max_train_examples=32,
                     max_dev_examples=32, progress=False)
    assert overridden["recipe"]["pooling"] == "cls"


def test_an_unknown_pooling_and_a_head_that_cannot_be_mean_pooled_are_one_line_each(sentiment, tmp_path):
    from transformers import BertConfig, BertModel

    glue, model_dir = sentiment
    with pytest.raises(UserError, match="pooling 'max' is not one of cls, mean"):
        run(model_dir, "sst2", glue, tmp_path / "max", [1], "auto", ["pooling=max"], progress=False)
    bert = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=2000, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)).save_pretrained(bert)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (model_dir / name).is_file():
            (bert / name).write_bytes((model_dir / name).read_bytes())
    with pytest.raises(UserError, match="pooling=mean needs a task head that reads the first token's state"):
        run(bert, "sst2", glue, tmp_path / "b", [1], "auto", ["epochs=1", "pooling=mean"], max_train_examples=32,
            max_dev_examples=32, progress=False)
