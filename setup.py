"""Only what pyproject.toml cannot say: the shipped files' packages, found and mapped at build time.

The files shipped next to the code travel inside the package in a wheel (fast_electra_ds/configs,
...), so that `--ds_config zero3.json`, `--config tiny.yaml` and the launcher scripts work from a
non-editable install; a source checkout keeps them at the root (fast_electra_ds/config/shipped.py looks in both)."""
from setuptools import find_packages, setup

SHIPPED = {
    "fast_electra_ds.configs": ("configs", ["*.yaml"]),
    "fast_electra_ds.ds_configs": ("ds_configs", ["*.json"]),
    "fast_electra_ds.launcher": ("launcher", ["*.md", "*.py", "*.sh"]),
    "fast_electra_ds.launcher.slurm": ("launcher/slurm", ["*.sh", "*.sbatch"]),
}

setup(
    packages=find_packages(include=["fast_electra_ds", "fast_electra_ds.*"]) + list(SHIPPED),
    package_dir={name: directory for name, (directory, _) in SHIPPED.items()},
    package_data={name: patterns for name, (_, patterns) in SHIPPED.items()},
)
