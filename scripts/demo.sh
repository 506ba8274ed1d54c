#!/usr/bin/env bash
# The whole pipeline on the embedded default corpus (Python's own pydoc topics), on 2 CPU ranks:
# tokenizer -> token shards -> auxiliary masked-LM (stage 1) -> Fast-ELECTRA main model under
# ZeRO-3 (stage 2) -> Hugging Face export -> summary. Outputs under runs/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/demo}
RANKS=${RANKS:-2}
AUX_STEPS=${AUX_STEPS:-1000}
MAIN_STEPS=${MAIN_STEPS:-1000}
export DS_ACCELERATOR=${DS_ACCELERATOR:-cpu} OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
started=$(date +%s)
# Replace only an earlier demo's directory (its marker, or the layout demos wrote before the marker), never a user's files.
if [ -e "$OUT" ] && [ -n "$(ls -A "$OUT" 2>/dev/null)" ] && [ ! -e "$OUT/.fast-electra-demo" ] \
   && ! { [ -f "$OUT/corpus.txt" ] && [ -d "$OUT/tokenizer" ] && [ -d "$OUT/aux" ]; }; then
  echo "error: $OUT exists and is not an earlier demo's output; choose another OUT=... or remove it yourself" >&2
  exit 2
fi
rm -rf "$OUT" && mkdir -p "$OUT" && touch "$OUT/.fast-electra-demo"

python -c "from fast_electra_ds.data.text import write_pydoc_corpus as w; print(w('$OUT/corpus.txt'), 'documents in the embedded corpus')"
fast-electra tokenizer --input "$OUT/corpus.txt" --out "$OUT/tokenizer" --vocab-size 4000
fast-electra prepare --input "$OUT/corpus.txt" --tokenizer "$OUT/tokenizer" --out "$OUT/data" --workers 2

# bf16 as shipped, but fp32 on a CPU that only emulates bf16 (there a bf16 step is several times slower).
if [ -z "${DS_CONFIG:-}" ] && python -c "import sys, torch; from fast_electra_ds.runtime.device import cpu_bf16_is_emulated as e; sys.exit(0 if e() and not torch.cuda.is_available() else 1)"; then
  echo "this CPU has no native bf16: the demo runs in fp32 (DS_CONFIG=ds_configs/zero3.json to force bf16)"
  DS_CONFIG=ds_configs/zero3_fp32.json AUX_DTYPE=fp32
fi
common=(--ds_config "${DS_CONFIG:-ds_configs/zero3.json}" --config configs/demo.yaml data.path="$OUT/data" data.tokenizer="$OUT/tokenizer")
echo "== stage 1: auxiliary masked-LM ($AUX_STEPS steps)"
deepspeed --num_gpus "$RANKS" train.py "${common[@]}" method=aux-mlm train.steps="$AUX_STEPS" train.out_dir="$OUT/aux"
echo "== stage 2: Fast-ELECTRA main model ($MAIN_STEPS steps, frozen aux)"
deepspeed --num_gpus "$RANKS" train.py "${common[@]}" method=fast aux.path="$OUT/aux/hf" aux.dtype="${AUX_DTYPE:-auto}" train.steps="$MAIN_STEPS" train.out_dir="$OUT"

python scripts/summary.py "$OUT" --wall-time $(( $(date +%s) - started ))
