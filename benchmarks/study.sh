#!/usr/bin/env bash
# The effectiveness study (issue 12) as it runs: resumable stage by stage (finished stages are skipped,
# a cut-short pre-training run resumes from its checkpoint). All stages took 322 min on 2 cores; they are
# committed under benchmarks/results/study/state/, so a fresh checkout only rebuilds the corpus and the tables.
#   nohup bash benchmarks/study.sh > runs/study.log 2>&1 &
# The fidelity runs (issue 20: one change per run, same setting; benchmarks/fidelity.py names them):
#   nohup bash benchmarks/study.sh fidelity fast-tau1 fast-clm > runs/fidelity.log 2>&1 &
#   FIDELITY_SEEDS="1 2 3" bash benchmarks/study.sh fidelity electra fast-target
#   FIDELITY_PRECISION=fp32 ... on a CPU without native bf16 (lscpu shows no avx512_bf16 / amx_bf16)
set -euo pipefail
cd "$(dirname "$0")/.."
# A fresh checkout (runs/ is not in git) starts from the finished stages committed with the results
# (stage records, metrics, the tokenizer, and the mlm, electra and aux exports). The corpus and the
# token shards are not in git: their stage records are dropped so that they are rebuilt (deterministic, minutes).
if [ ! -d runs/study/stages ] && [ -d benchmarks/results/study/state ]; then
  mkdir -p runs/study && cp -r benchmarks/results/study/state/. runs/study/
  rm -f runs/study/stages/corpus.json runs/study/stages/prepare.json
fi
mkdir -p runs/study
python benchmarks/corpora.py --out runs/study/corpora > runs/study/corpora.jsonl
WIKI=$(python -c "from fast_electra_ds.data.wiki import wiki_test_dump; print(wiki_test_dump())")
ARGS=(--work runs/study --preset demo --vocab-size 8000 --micro-batch 32 --ranks 2
  --lr 1e-3 --main-steps 3000 --aux-steps 1500 --methods mlm electra fast --seeds 1 2 3 --robustness --jobs 2
  --corpus "$WIKI" runs/study/corpora/python-docs.txt runs/study/corpora/linux-docs.txt runs/study/corpora/postgresql-docs.txt
  --set curriculum.kind=exp curriculum.t0=2 curriculum.tau=0.1 --out-dir runs/study/results)
if [ "${1:-}" = fidelity ]; then
  shift
  # The corpus and the shards first: with --methods mlm (all its stages finished) effectiveness.py builds only them.
  [ -f runs/study/stages/prepare.json ] || python benchmarks/effectiveness.py "${ARGS[@]}" --methods mlm --tasks sst2 --seeds 1 --out-dir runs/study/prep-results
  exec python benchmarks/fidelity.py --variants "$@" --pretrain-seeds ${FIDELITY_SEEDS:-1} --precision ${FIDELITY_PRECISION:-bf16} \
    --save-state benchmarks/results/study/state --fidelity-out benchmarks/results/study "${ARGS[@]}"
fi
exec python benchmarks/effectiveness.py "${ARGS[@]}"
