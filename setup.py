from setuptools import find_packages, setup

setup(
    name="fast-electra-ds",
    version="0.1.0",
    description="ELECTRA-style encoder pre-training on DeepSpeed ZeRO-3: Fast-ELECTRA and its baselines",
    packages=find_packages(include=["fast_electra_ds", "fast_electra_ds.*"]),
    python_requires=">=3.10",
    install_requires=[
        # torch first: a GPU user installs their CUDA build beforehand and it is kept (any >= 2.6 works);
        # `make setup` installs the CPU build 2.13.0 when none is present.
        "torch>=2.6",
        "deepspeed>=0.19,<0.20",
        "transformers>=5.0,<6",
        "accelerate>=1.0",  # transformers' HfDeepSpeedConfig needs it
        "sentencepiece>=0.2",
        "megatron-core>=0.16,<0.17",  # only its IndexedDataset .bin/.idx format
        "safetensors",
        "numpy",
        "pyyaml",
        "tqdm",
        "tensorboard",  # the shipped DeepSpeed configs turn on its TensorBoard monitor (run_dir/tensorboard)
    ],
    # test: scikit-learn is the metric reference of the fine-tuning tests (it brings scipy).
    extras_require={"test": ["pytest>=8", "scikit-learn"], "bench": ["matplotlib"]},  # bench: the PNG charts of benchmarks/report.py
    entry_points={"console_scripts": ["fast-electra=fast_electra_ds.cli:main"]},
)
