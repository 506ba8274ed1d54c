"""A non-editable install (pip install of the source tree into a fresh venv) carries the shipped
configs, DeepSpeed JSONs and launcher scripts, and `fast-electra train` works from it anywhere."""
import shutil
import subprocess
import sys

import pytest

import fast_electra_ds
from tests.helpers import ROOT, cpu_env

pytestmark = pytest.mark.integration

NOT_SOURCE = shutil.ignore_patterns(".git", "runs", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", "DeepSpeedJobName")


def test_wheel_install_carries_the_configs_and_trains(prepared, tmp_path):
    source, venv, elsewhere = tmp_path / "src", tmp_path / "venv", tmp_path / "elsewhere"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)  # pip builds in the tree: never in the checkout
    # The venv sees this interpreter's packages (torch, deepspeed: no download) but gets its own fast_electra_ds.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                              "--check-build-dependencies", "--no-index", str(source)],
                             capture_output=True, text=True, timeout=300)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere.mkdir()

    installed = {k: v for k, v in cpu_env().items() if k != "PYTHONPATH"}  # a PYTHONPATH to a checkout would shadow the install

    def run(*args):
        return subprocess.run([str(a) for a in args], cwd=elsewhere, env=installed, capture_output=True, text=True, timeout=300)

    where = run(python, "-c", "import fast_electra_ds.config.shipped as s; print(s.__file__); print(*(s.shipped_dir(k) for k in s.SHIPPED))")
    module, *dirs = where.stdout.split()
    site = str(venv / "lib")
    assert module.startswith(site) and all(d.startswith(site) for d in dirs), where.stdout + where.stderr
    package = venv.glob("lib/python*/site-packages/fast_electra_ds").__next__()
    for shipped in ("configs/tiny.yaml", "ds_configs/zero3.json", "launcher/slurm/train.sbatch", "launcher/preflight.py", "train.py"):
        assert (package / shipped).is_file(), shipped

    version = run(venv / "bin" / "fast-electra", "--version")
    assert version.returncode == 0 and version.stdout.split() == ["fast-electra", fast_electra_ds.__version__], version.stdout + version.stderr
    help_text = run(venv / "bin" / "fast-electra", "train", "--help")
    assert help_text.returncode == 0 and help_text.stdout.startswith("usage: fast-electra train"), help_text.stderr
    out = tmp_path / "run"
    trained = run(venv / "bin" / "fast-electra", "train", "--ds_config", "zero3.json", "--config", "tiny.yaml", "method=aux-mlm",
                  f"data.path={prepared['data']}", f"data.tokenizer={prepared['tokenizer']}", f"train.out_dir={out}",
                  "train.steps=2", "train.export=false")
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert '"finished": true' in trained.stdout and (out / "ds_config.json").is_file()
