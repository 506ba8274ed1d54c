"""Print a short summary of a finished run: loss and accuracy at start and end, speed, memory,
and a check that the exported model loads in transformers."""
import argparse
from pathlib import Path

import torch
from transformers import AutoModelForPreTraining, AutoTokenizer

from fast_electra_ds.metrics.logger import read_metrics
from fast_electra_ds.metrics.learning import CONTEXT_GAIN_LEARNED  # nats: the bar for "learned context"

PRIOR_GAP_NOISE = 0.005  # nats: below this, no better than the base rate


def learning_verdict(prior_gap: float, context_gain: float) -> str:
    """What the discriminator learned, in one plain sentence: beating the base rate can come from
    token identity alone (a flattened sampling distribution makes some replacements recognisable by
    the token itself); only the context gain says it reads context."""
    if context_gain >= CONTEXT_GAIN_LEARNED:
        return f"verdict: the discriminator learned to use context (context gain {context_gain:+.3f} >= {CONTEXT_GAIN_LEARNED} nats)."
    if prior_gap > PRIOR_GAP_NOISE:
        return (f"verdict: NOT beyond token identity: it beats the base rate by {prior_gap:.3f} nats, but a detector that sees only "
                f"the token does as well (context gain {context_gain:+.3f} < {CONTEXT_GAIN_LEARNED} nats). This budget is too small "
                f"to learn context on this corpus (benchmarks/README.md: the effectiveness study).")
    return f"verdict: not learning: no better than predicting the base rate (prior gap {prior_gap:+.3f} nats)."


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--wall-time", type=float, default=None)
    args = parser.parse_args()
    run = Path(args.run_dir)
    records = read_metrics(run / "metrics.jsonl")
    first, last = records[0], records[-1]
    steady = [r for r in records[1:]] or records
    median = lambda key: sorted(r[key] for r in steady)[len(steady) // 2]
    print(f"\nrun {run}: {last['step']} steps")
    print(f"  loss      {first['loss']:.4f} (step {first['step']}) -> {last['loss']:.4f} (step {last['step']})")
    print(f"  rtd_acc   {first['rtd_acc']:.4f} -> {last['rtd_acc']:.4f}   (replaced {last['rtd_acc_replaced']:.3f}, original {last['rtd_acc_original']:.3f})")
    print(f"  rtd_auc   {first['rtd_auc']:.3f} -> {last['rtd_auc']:.3f}; prior gap {last['rtd_prior_gap']:+.4f} nats; "
          f"context gain {last['rtd_context_gain']:+.4f} nats (training, last log window)")
    evaluated = [r for r in records if "val_rtd_loss" in r]
    if evaluated:
        val = evaluated[-1]
        print(f"  validation (step {val['step']}, held-out text): loss {val['val_rtd_loss']:.4f}, AUC {val['val_rtd_auc']:.3f}, "
              f"prior gap {val['val_rtd_prior_gap']:+.4f}, context gain {val['val_rtd_context_gain']:+.4f} nats")
        print("  " + learning_verdict(val["val_rtd_prior_gap"], val["val_rtd_context_gain"]))
    print(f"  temperature {first['temperature']:.3f} -> {last['temperature']:.3f}; aux accuracy at masked positions {last['aux_acc']:.3f}")
    print(f"  median step {median('step_time_s'):.3f} s, {median('tokens_per_s'):.0f} tokens/s, {median('tflops_per_s') * 1000:.2f} GFLOP/s; peak memory per rank {last['peak_memory_gb']:.2f} GiB")
    tokenizer = AutoTokenizer.from_pretrained(run / "hf")
    model = AutoModelForPreTraining.from_pretrained(run / "hf")
    text = "The for statement is used to iterate over the elements of a sequence."
    with torch.no_grad():
        logits = model(**tokenizer(text, return_tensors="pt")).logits
    print(f"  export    {run / 'hf'}: {type(model).__name__}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, logits {tuple(logits.shape)}")
    if args.wall_time is not None:
        print(f"  wall time {args.wall_time:.0f} s")


if __name__ == "__main__":
    main()
