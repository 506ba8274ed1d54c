"""From text to batches: reading documents (text, wiki), the tokenizer (tokenizer), tokenized shards
(prepare, indexed), packed samples split over ranks (dataset), the packings of a run's phases of
sequence length (phases), batches read ahead (prefetch) and the attention mask of a batch without
padding (unpadded)."""
