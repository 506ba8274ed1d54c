"""Run on 2 CPU ranks by test_emb_gen_pipeline.py (deepspeed launcher): `emb-gen`'s module under a real
ZeRO-3 engine (fp32, lr 0, so the weights never move), its word-embedding table loaded from a
pre-trained model by emb_gen.embeddings_from. Each rank writes rank<r>.json with what the test
compares: its share of the table, the table it gathers, the neighbours it finds for every token, and
the full gradient of the embeddings with and without the pull loss.

    deepspeed --num_gpus 2 tests/integration/emb_gen_zero3_probe.py OUT_DIR PRETRAINED_DIR
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import deepspeed  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from deepspeed.utils import safe_get_full_grad  # noqa: E402

from fast_electra_ds.config.run_config import load_config  # noqa: E402
from fast_electra_ds.models.embedding_generator import full_table  # noqa: E402
from fast_electra_ds.methods import METHODS, StepContext, TokenInfo  # noqa: E402

TOKENS = TokenInfo(vocab_size=120, pad_id=0, unk_id=1, cls_id=2, sep_id=3, mask_id=4, fingerprint="probe")
DS_CONFIG = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 1, "zero_optimization": {"stage": 3},
             "optimizer": {"type": "AdamW", "params": {"lr": 0.0, "weight_decay": 0.0, "torch_adam": True}}}


def main(out_dir: Path, pretrained: Path) -> None:
    deepspeed.init_distributed(dist_backend="gloo")
    rank = dist.get_rank()
    config = load_config([str(ROOT / "configs/tiny.yaml")], ["method=emb-gen", "model.dropout=0.0", "emb_gen.k=4",
                                                             f"emb_gen.embeddings_from={pretrained}"])
    method = METHODS["emb-gen"](config, TOKENS, torch.device("cpu"))
    method.setup()
    torch.manual_seed(0)
    module = method.build_model(DS_CONFIG)
    engine, _, _, _ = deepspeed.initialize(model=module, model_parameters=list(module.parameters()), config=DS_CONFIG)
    weight = module.word_embeddings.weight
    record = {"local_numel": weight.ds_tensor.numel(), "total_numel": weight.ds_numel}
    with full_table(weight) as table:
        gathered = table.clone()
    record["table"] = gathered.tolist()
    record["table_after_gather_is_partitioned_again"] = weight.numel() == 0  # ZeRO-3 frees the gathered copy

    # Every rank searches the gathered table for every token (the per-step path, then the [V, k] table).
    ctx = StepContext(0, 0.0, torch.Generator().manual_seed(rank))
    record["neighbours"] = method.neighbours(torch.arange(5, 120), ctx).tolist()
    method.config.emb_gen.refresh_every = 10
    record["table_neighbours"] = method.neighbours(torch.arange(5, 120), ctx).tolist()
    method.config.emb_gen.refresh_every = 1

    # The same batch on both ranks, so the averaged gradient equals each rank's own.
    g = torch.Generator().manual_seed(11)
    ids = torch.randint(5, 120, (4, 32), generator=g)
    ids[:, 0], ids[:, -1] = TOKENS.cls_id, TOKENS.sep_id
    inputs, _ = method.prepare_batch({"input_ids": ids, "attention_mask": torch.ones_like(ids)},
                                     StepContext(0, 0.0, torch.Generator().manual_seed(5)))
    record["original_ids"] = inputs["original_ids"].tolist()
    record["input_ids"] = inputs["input_ids"].tolist()
    grads = {}
    for pull_weight in (0.0, 1.0):
        module.pull_weight = pull_weight
        loss, _ = engine(**inputs)
        engine.backward(loss)
        grads[pull_weight] = safe_get_full_grad(weight).clone()
        engine.step()  # lr 0: nothing moves
    record["pull_grad"] = (grads[1.0] - grads[0.0]).tolist()
    (out_dir / f"rank{rank}.json").write_text(json.dumps(record))
    dist.barrier()


if __name__ == "__main__":
    out, pretrained = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]  # the launcher adds --local_rank
    main(Path(out), Path(pretrained))
