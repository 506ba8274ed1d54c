from setuptools import find_packages, setup

# The files shipped next to the code travel inside the package in a wheel (fast_electra_ds/configs,
# ...), so that `--ds_config zero3.json`, `--config tiny.yaml` and the launcher scripts work from a
# non-editable install; a source checkout keeps them at the root (fast_electra_ds/config/shipped.py looks in both).
SHIPPED = {
    "fast_electra_ds.configs": ("configs", ["*.yaml"]),
    "fast_electra_ds.ds_configs": ("ds_configs", ["*.json"]),
    "fast_electra_ds.launcher": ("launcher", ["*.md", "*.py", "*.sh"]),
    "fast_electra_ds.launcher.slurm": ("launcher/slurm", ["*.sh", "*.sbatch"]),
}

setup(
    name="fast-electra-ds",
    version="0.1.0",
    description="ELECTRA-style encoder pre-training on DeepSpeed ZeRO-3: Fast-ELECTRA and its baselines",
    license="Apache-2.0",
    license_files=["LICENSE"],
    packages=find_packages(include=["fast_electra_ds", "fast_electra_ds.*"]) + list(SHIPPED),
    package_dir={name: directory for name, (directory, _) in SHIPPED.items()},
    package_data={name: patterns for name, (_, patterns) in SHIPPED.items()},
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
        "scikit-learn",  # the fine-tuning metrics (it brings scipy, for the correlations)
    ],
    # pyarrow: `prepare` reads .parquet/.arrow with it (imported only then; Hugging Face datasets brings it);
    # datasets: the tests write those files as it does. bench: the PNG charts of benchmarks/report.py.
    extras_require={"test": ["pytest>=8", "pyarrow", "datasets", "wandb"], "bench": ["matplotlib"]},
    entry_points={"console_scripts": ["fast-electra=fast_electra_ds.cli:main"]},
)
