"""What the per-sample token-id range check (PackedDataset.stream_slice) costs: the time of a sample
read with it, and of the check alone on a sample's ids, on a prepared dataset.

    python benchmarks/shard_id_check.py DATA_DIR [SEQ_LEN ...]
"""
from __future__ import annotations

import sys
import timeit

from fast_electra_ds.data.dataset import PackedDataset


def main(argv: list[str]) -> None:
    data, lengths = argv[0], [int(x) for x in argv[1:]] or [128, 512]
    for seq_len in lengths:
        dataset = PackedDataset(data, seq_len)
        indices = range(min(len(dataset), 2000))
        read = min(timeit.repeat(lambda: [dataset[i] for i in indices], number=1, repeat=5)) / len(indices)
        ids = dataset.stream_slice(0, dataset.tokens_per_sample)
        check = min(timeit.repeat(lambda: ids.min() < 0 or ids.max() >= dataset.vocab_size, number=10000, repeat=5)) / 10000
        print(f"seq_len {seq_len}: sample read {read * 1e6:.1f} us (check included), check alone {check * 1e6:.2f} us ({100 * check / read:.1f}%)")


if __name__ == "__main__":
    main(sys.argv[1:])
