"""The effectiveness study's parts (benchmarks/effectiveness.py is its command line and runs them in
order; benchmarks/fidelity.py adds runs in the same setting):

- settings: what one study is (its choices, the models and tasks it compares);
- budget: the equal main-model FLOPs budget, from the methods' own flops_per_sequence;
- stages: a stage's record (finished or not), its wall time, its logged child process;
- prepare, pretraining, finetuning: the data, pre-training and fine-tuning stages;
- analysis: from finished stages to rows, verdicts and the summary;
- render: the tables, CSV and charts."""
