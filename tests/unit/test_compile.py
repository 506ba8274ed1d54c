"""model.compile: every encoder block is a ZeRO-3 leaf whose forward compiles without a graph break."""
import torch
import torch._dynamo
from transformers import ElectraForPreTraining

from fast_electra_ds.training.compile import compile_blocks, transformer_blocks
from fast_electra_ds.config.run_config import RunConfig
from fast_electra_ds.models.corrective_lm import corrective_lm_head
from fast_electra_ds.models.encoder import build_model, electra_config
from fast_electra_ds.models.pretraining import ReplacedTokenDetection


def fast_module():
    config = RunConfig()
    config.model.preset = "tiny"
    torch.manual_seed(0)
    discriminator = build_model(ElectraForPreTraining, electra_config(config.model.sizes(), config.model, 1000, 0), None)
    return ReplacedTokenDetection(discriminator, corrective_lm_head(discriminator, config.model, None)), config


def test_blocks_are_the_encoder_layers_and_become_zero3_leaves():
    module, config = fast_module()
    blocks = transformer_blocks(module)
    assert blocks == list(module.discriminator.electra.encoder.layer)
    assert compile_blocks(module) == config.model.sizes()["num_hidden_layers"]
    assert all(block._z3_leaf for block in blocks)


def test_a_block_compiles_whole_with_and_without_a_padding_mask():
    module, _ = fast_module()
    block = transformer_blocks(module)[0]
    hidden = torch.randn(2, 16, block.attention.self.query.in_features)
    padding = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    padding[:, :, :, :12] = True
    for mask in (None, padding):
        torch._dynamo.reset()
        explained = torch._dynamo.explain(type(block).forward)(block, hidden, attention_mask=mask)
        assert explained.graph_break_count == 0, explained.break_reasons
        assert explained.graph_count == 1
