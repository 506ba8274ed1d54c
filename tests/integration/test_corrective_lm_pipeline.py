"""model.corrective_lm=true with method fast on 2 CPU ranks under ZeRO-3: the CLM head is partitioned
with the main model (its decoder tied to the word embeddings), its loss falls, and the export writes it
as a Hugging Face ElectraForMaskedLM that reproduces the engine's logits."""
import json

import pytest
import torch

from tests.helpers import common, launch, metrics, run_cli

pytestmark = pytest.mark.integration

STEPS = 20
WEIGHT = 1.0  # the CLM loss as strong as the RTD loss: visible within a few steps


@pytest.fixture(scope="module")
def clm_run(prepared, tmp_path_factory):
    from transformers import ElectraConfig, ElectraForMaskedLM

    root = tmp_path_factory.mktemp("clm")
    vocab = json.loads((prepared["tokenizer"] / "tokenizer.json").read_text())["model"]["vocab"]
    torch.manual_seed(0)  # a random frozen aux: enough to corrupt; this test is about the main model's head
    aux = ElectraForMaskedLM(ElectraConfig(vocab_size=len(vocab), embedding_size=64, hidden_size=64, num_hidden_layers=1,
                                           num_attention_heads=1, intermediate_size=128, max_position_embeddings=512))
    aux.save_pretrained(root / "aux")
    launch(common(prepared, root / "run", "method=fast", f"aux.path={root / 'aux'}", f"train.steps={STEPS}",
                  "model.corrective_lm=true", f"model.corrective_lm_weight={WEIGHT}"))
    return root / "run"


def test_clm_loss_falls_and_is_logged(clm_run):
    records = metrics(clm_run)
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    for key in ("clm_loss", "clm_acc", "clm_acc_replaced", "rtd_loss", "loss"):
        assert key in records[0], key
    first, last = records[0]["clm_loss"], sum(r["clm_loss"] for r in records[-3:]) / 3
    assert last < first - 0.05, (first, last)  # the lr decays to 0 over these few steps
    assert records[0]["loss"] == pytest.approx(records[0]["rtd_loss"] + WEIGHT * records[0]["clm_loss"], rel=1e-3)


def test_head_is_partitioned_with_the_main_model(clm_run):
    from fast_electra_ds.config.run_config import load_config
    from fast_electra_ds.methods import METHODS, TokenInfo

    config = load_config([str(clm_run / "config.yaml")])
    config.aux.path = None
    tokens = TokenInfo(**json.loads((clm_run / "tokens.json").read_text()))
    module = METHODS["fast"](config, tokens, torch.device("cpu")).build_model(None)
    whole = sum(p.numel() for p in module.parameters())  # tied decoder weight counted once
    without_head = sum(p.numel() for p in module.discriminator.parameters())
    for rank in range(2):
        record = json.loads((clm_run / "placement" / f"rank{rank}.json").read_text())
        assert record["main_total_params"] == whole > without_head
        assert abs(record["main_local_params"] / whole - 0.5) < 0.05


def test_export_writes_the_head_as_a_masked_lm_matching_the_engine(clm_run, tmp_path):
    from transformers import ElectraForMaskedLM, ElectraForPreTraining

    out = tmp_path / "export"
    result = run_cli(["export", str(clm_run), str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "corrective_lm: max |logit - engine|" in result.stdout
    discriminator = ElectraForPreTraining.from_pretrained(out).eval()
    clm, info = ElectraForMaskedLM.from_pretrained(out / "corrective_lm", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    assert torch.equal(clm.electra.embeddings.word_embeddings.weight, discriminator.electra.embeddings.word_embeddings.weight)
    probe = torch.load(sorted((clm_run / "checkpoints").glob("step_*"))[-1] / "probe.pt", weights_only=False)
    with torch.no_grad():
        logits = clm.eval()(input_ids=probe["input_ids"], attention_mask=probe["attention_mask"]).logits
    assert (logits - probe["logits"]["corrective_lm"]).abs().max() < 5e-2  # bf16 engine vs fp32 export
