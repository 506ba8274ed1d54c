"""Training, loading and fingerprinting tokenizers.

`train_tokenizer` trains a SentencePiece unigram model and saves it as a Hugging Face *fast*
tokenizer directory (tokenizer.json + tokenizer_config.json, plus the original `spm.model`) that
`transformers.AutoTokenizer.from_pretrained(dir)` loads offline. Its special tokens are
SPECIAL_TOKENS with ids 0..4. Everything else in the project reads special ids from the tokenizer
(or from a prepared dataset's meta.json), so any existing HF tokenizer directory works too.
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import re
import time
from pathlib import Path

from ..errors import UserError, check_writable, writing_to
from .text import iter_documents

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4 in our tokenizers
SPM_MODEL_FILE = "spm.model"
# Loading arguments transformers keeps in init_kwargs and would write into tokenizer_config.json.
SESSION_KEYS = ("local_files_only", "is_local", "trust_remote_code", "name_or_path", "_commit_hash")
SEED = 1234

# SentencePiece keeps every training sentence in memory; a uniform sample of this many lines is
# plenty for an 8k-64k vocabulary and keeps training to seconds/minutes on a CPU.
MAX_TRAINING_SENTENCES = 1_000_000
# SentencePiece silently drops sentences longer than max_sentence_length bytes; we cut long lines
# (e.g. whole JSONL documents without newlines) into pieces of at most this many characters.
MAX_SENTENCE_CHARS = 2000


def _training_sentences(document: str):
    for line in document.split("\n"):
        line = line.strip()
        while len(line) > MAX_SENTENCE_CHARS:
            cut = line.rfind(" ", 0, MAX_SENTENCE_CHARS)
            cut = cut if cut > 0 else MAX_SENTENCE_CHARS
            yield line[:cut]
            line = line[cut:].lstrip()
        if line:
            yield line


def _sample_sentences(input_files, text_field: str, stats: dict) -> tuple[list[str], int]:
    """Deterministic reservoir sample of at most MAX_TRAINING_SENTENCES lines over all inputs."""
    rng = random.Random(SEED)
    sample: list[str] = []
    seen = 0
    for path in input_files:
        for document in iter_documents(path, text_field=text_field, stats=stats):
            stats["documents"] = stats.get("documents", 0) + 1
            for sentence in _training_sentences(document):
                seen += 1
                if len(sample) < MAX_TRAINING_SENTENCES:
                    sample.append(sentence)
                else:
                    j = rng.randrange(seen)
                    if j < MAX_TRAINING_SENTENCES:
                        sample[j] = sentence
    return sample, seen


def _train_sentencepiece(sentences: list[str], vocab_size: int, model_type: str) -> bytes:
    import sentencepiece as spm

    spm.set_random_generator_seed(SEED)
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_writer=model,
            vocab_size=vocab_size,
            model_type=model_type,
            # [PAD]=0 [UNK]=1, then the control symbols take 2, 3, 4 in order; no BOS/EOS.
            pad_id=0, pad_piece="[PAD]", unk_id=1, unk_piece="[UNK]", bos_id=-1, eos_id=-1,
            control_symbols=SPECIAL_TOKENS[2:],
            character_coverage=0.9999,
            max_sentence_length=4 * MAX_SENTENCE_CHARS + 16,  # bytes; a UTF-8 char is at most 4
            input_sentence_size=MAX_TRAINING_SENTENCES,
            shuffle_input_sentence=True,
            num_threads=2,
            minloglevel=2,  # quiet: errors only
        )
    except RuntimeError as e:
        too_high = re.search(r"Vocabulary size too high \((\d+)\).*<= (\d+)", str(e))
        if too_high:
            raise UserError(
                f"--vocab-size {too_high.group(1)} is too large for this corpus (it supports at most {too_high.group(2)})",
                f"pass a smaller --vocab-size, e.g. --vocab-size {too_high.group(2)}, or more text",
            ) from None
        raise UserError(f"sentencepiece could not train a tokenizer: {str(e).splitlines()[-1]}",
                        "check --vocab-size and the input text") from None
    return model.getvalue()


def _fast_tokenizer_from_sentencepiece(model_proto: bytes):
    """Build a `tokenizers.Tokenizer` equivalent to the trained unigram SentencePiece model.

    Built from the processor's pieces and scores (the protobuf package is not needed). The
    normaliser approximates SentencePiece's nmt_nfkc + whitespace folding; tokenizer.json is the
    source of truth from here on, the spm.model file is kept for reference and other toolkits."""
    import sentencepiece as spm
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    processor = spm.SentencePieceProcessor(model_proto=model_proto)
    vocab = [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]
    assert [piece for piece, _ in vocab[: len(SPECIAL_TOKENS)]] == SPECIAL_TOKENS, vocab[:5]

    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=SPECIAL_TOKENS.index("[UNK]"), byte_fallback=False))
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    # Special tokens are matched only when they appear literally (they are not normalised).
    tokenizer.add_special_tokens([AddedToken(token, special=True, normalized=False) for token in SPECIAL_TOKENS])
    cls_id, sep_id = SPECIAL_TOKENS.index("[CLS]"), SPECIAL_TOKENS.index("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tokenizer


def train_tokenizer(input_files, out_dir, vocab_size: int = 8000, text_field: str = "text",
                    model_type: str = "unigram") -> str:
    """Train a SentencePiece unigram tokenizer on the documents of `input_files` and save it to
    `out_dir` as a Hugging Face fast-tokenizer directory. Deterministic for the same inputs.
    Returns `out_dir` as a string."""
    from transformers import PreTrainedTokenizerFast

    if model_type != "unigram":
        # Only the unigram model converts to a fast tokenizer without the protobuf package.
        raise UserError(f"tokenizer model type {model_type!r} is not supported", "use the unigram model type")
    if vocab_size < len(SPECIAL_TOKENS) + 1:
        raise UserError(f"--vocab-size {vocab_size} is too small", f"pass a value above {len(SPECIAL_TOKENS)}, e.g. 8000")
    input_files = [Path(p) for p in ([input_files] if isinstance(input_files, (str, Path)) else input_files)]
    if not input_files:
        raise UserError("no input files given", "pass --input FILE [FILE ...]")
    for path in input_files:
        if not path.is_file():
            raise UserError(f"input file {path} does not exist" if not path.exists() else f"input {path} is not a file", "check the --input path")
    check_writable(out_dir, "--out")  # before the training, which can take a while

    sentences, _ = _sample_sentences(input_files, text_field, stats={})
    model_proto = _train_sentencepiece(sentences, vocab_size, model_type)
    fast = _fast_tokenizer_from_sentencepiece(model_proto)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=fast,
        pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
    (out_dir / SPM_MODEL_FILE).write_bytes(model_proto)
    return str(out_dir)


def load_tokenizer(path):
    """Load a local Hugging Face tokenizer directory (never the hub, never remote code) and check
    it has the special tokens ELECTRA needs."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not path.exists():
        raise UserError(f"tokenizer directory {path} does not exist", "train one with `fast-electra tokenizer` or pass an existing tokenizer directory")
    if not path.is_dir():
        raise UserError(f"tokenizer path {path} is not a directory", "pass the directory that holds tokenizer.json / tokenizer_config.json")
    known_files = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model", "vocab.json")
    if not any((path / name).exists() for name in known_files):
        raise UserError(f"{path} is not a tokenizer directory (no tokenizer.json or tokenizer_config.json)",
                        "train one with `fast-electra tokenizer` or pass a Hugging Face tokenizer directory")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
    except Exception as e:  # transformers raises OSError/ValueError/KeyError/... for broken directories
        message = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot load the tokenizer in {path}: {message}",
                        "pass a valid Hugging Face tokenizer directory or re-run `fast-electra tokenizer`") from None
    for key in SESSION_KEYS:  # how this process loaded it, not part of the tokenizer: never saved with it
        tokenizer.init_kwargs.pop(key, None)
    # A special token absent from the vocabulary would silently map to [UNK]'s id.
    vocab = tokenizer.get_vocab()
    missing = [name for name in ("pad", "cls", "sep", "mask")
               if getattr(tokenizer, f"{name}_token", None) is None or str(getattr(tokenizer, f"{name}_token")) not in vocab]
    if missing:
        raise UserError(f"tokenizer {path} has no {', '.join(t + ' token' for t in missing)}",
                        "use a tokenizer that defines [PAD], [CLS], [SEP] and [MASK] (e.g. one from `fast-electra tokenizer`)")
    return tokenizer


def save_tokenizer_for_model(tokenizer, out_dir, max_positions: int) -> None:
    """Save next to a model that reads at most `max_positions` tokens: model_max_length makes
    `truncation=True` (pipelines, Trainer) cut inputs to what the model can take."""
    tokenizer.model_max_length = max_positions
    tokenizer.init_kwargs["model_max_length"] = max_positions
    tokenizer.save_pretrained(str(out_dir))


def special_token_ids(tokenizer) -> dict[str, int | None]:
    """The special ids as read from the tokenizer (unk may be None for byte-level tokenizers)."""
    return {name: getattr(tokenizer, f"{name}_token_id") for name in ("pad", "unk", "cls", "sep", "mask")}


def tokenizer_fingerprint(tokenizer) -> str:
    """Stable hash of the vocabulary (sorted token->id pairs, added tokens included) and the
    special ids: equal fingerprints mean token ids mean the same thing."""
    payload = {
        "vocab": sorted(tokenizer.get_vocab().items()),
        "special_ids": special_token_ids(tokenizer),
    }
    blob = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fast-electra tokenizer",
                                     description="Train a SentencePiece unigram tokenizer and save it as a Hugging Face tokenizer directory.")
    parser.add_argument("--input", nargs="+", required=True, metavar="FILE", help="text (.txt), JSON lines (.jsonl), .json, or Hugging Face datasets' .parquet / .arrow files; .gz/.bz2 ok for text and JSON")
    parser.add_argument("--out", required=True, metavar="DIR", help="output tokenizer directory")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--text-field", default="text", help="JSON field or Parquet/Arrow column holding the text (default: text)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    with writing_to(args.out):
        out_dir = train_tokenizer(args.input, args.out, vocab_size=args.vocab_size, text_field=args.text_field)
    tokenizer = load_tokenizer(out_dir)
    print(f"tokenizer: {len(tokenizer)} tokens, fingerprint {tokenizer_fingerprint(tokenizer)}, "
          f"saved to {out_dir} in {time.perf_counter() - started:.1f}s")
    return 0
