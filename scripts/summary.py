"""Print a short summary of a finished run: loss and accuracy at start and end, speed, memory,
and a check that the exported model loads in transformers."""
import argparse
import json
import math
from pathlib import Path

import torch
from transformers import AutoModelForPreTraining, AutoTokenizer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--wall-time", type=float, default=None)
    args = parser.parse_args()
    run = Path(args.run_dir)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line]
    first, last = records[0], records[-1]
    steady = [r for r in records[1:]] or records
    median = lambda key: sorted(r[key] for r in steady)[len(steady) // 2]
    print(f"\nrun {run}: {last['step']} steps")
    print(f"  loss      {first['loss']:.4f} (step {first['step']}) -> {last['loss']:.4f} (step {last['step']})")
    print(f"  rtd_acc   {first['rtd_acc']:.4f} -> {last['rtd_acc']:.4f}   (replaced {last['rtd_acc_replaced']:.3f}, original {last['rtd_acc_original']:.3f})")
    p = last["replaced_frac"]
    prior = -(p * math.log(p) + (1 - p) * math.log(1 - p)) if 0 < p < 1 else 0.0
    print(f"  (always answering 'original' would score loss {prior:.4f}, accuracy {1 - p:.4f}: below that, the model detects replacements from context)")
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
