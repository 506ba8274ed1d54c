"""Quiet, explained starts: a DeepSpeed op compiled on first use is announced once, before, and
timed, after (a later start that finds it in torch's extension cache says nothing); the warning
DeepSpeed's schedulers give about their own constructor's call is dropped while the engine is built
only."""
import logging
import subprocess
import sys
import textwrap

import torch

from fast_electra_ds.runtime.process_group import SCHEDULER_NOT_STARTED, scheduler_built_quietly
from tests.helpers import ROOT, cpu_env

# A real op through DeepSpeed's builder and torch's JIT compiler, small enough to compile in seconds.
BUILD = textwrap.dedent('''
    import sys
    from pathlib import Path
    from deepspeed.ops.op_builder.cpu.builder import CPUOpBuilder
    from fast_electra_ds.runtime.process_group import explain_op_builds

    source = Path(sys.argv[1])
    if not source.exists():  # rewritten, it would be compiled again
        source.write_text("#include <Python.h>\\n"
                          "static struct PyModuleDef m = {PyModuleDef_HEAD_INIT, \\"fe_tiny_op\\", 0, -1, 0};\\n"
                          "PyMODINIT_FUNC PyInit_fe_tiny_op(void) { return PyModule_Create(&m); }\\n")

    class Tiny(CPUOpBuilder):
        NAME = "fe_tiny_op"
        def __init__(self):
            super().__init__(name=self.NAME)
        def absolute_name(self):
            return self.NAME
        def sources(self):
            return [str(source)]
        def include_paths(self):
            return []
        def cxx_args(self):
            return ["-O0"]

    explain_op_builds()
    explain_op_builds()  # idempotent: one wrapper
    module = Tiny().load()
    Tiny().load()  # loaded in this process: nothing more to say
    print("loaded", module.__name__)
''')


def build(tmp_path):
    env = dict(cpu_env(), TORCH_EXTENSIONS_DIR=str(tmp_path / "extensions"), RANK="0")
    result = subprocess.run([sys.executable, "-c", BUILD, str(tmp_path / "tiny.cpp")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return [line for line in result.stdout.splitlines() if line.startswith("[fast-electra]")], result.stdout


def test_a_first_build_is_announced_and_timed_and_a_cached_one_is_silent(tmp_path):
    said, stdout = build(tmp_path)
    assert len(said) == 2 and "loaded fe_tiny_op" in stdout, stdout
    assert said[0].startswith("[fast-electra] DeepSpeed is compiling its fe_tiny_op op, once per machine")
    assert said[1].startswith("[fast-electra] DeepSpeed's fe_tiny_op op compiled in ") and said[1].endswith(" s")
    said_again, stdout = build(tmp_path)  # a new process: the op is in the extension cache
    assert said_again == [] and "loaded fe_tiny_op" in stdout, stdout


def test_the_scheduler_warning_is_dropped_while_the_engine_is_built_only():
    from deepspeed.runtime.lr_schedules import WarmupDecayLR
    from deepspeed.utils import logger

    seen = []

    class Catch(logging.Handler):
        def emit(self, record):
            seen.append(record.getMessage())

    catch = Catch()
    logger.addHandler(catch)
    try:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        WarmupDecayLR(optimizer, total_num_steps=10, warmup_num_steps=2)
        assert seen.count(SCHEDULER_NOT_STARTED) == 1  # DeepSpeed's constructor asks its own get_lr
        with scheduler_built_quietly():
            scheduler = WarmupDecayLR(optimizer, total_num_steps=10, warmup_num_steps=2)
        assert seen.count(SCHEDULER_NOT_STARTED) == 1
        scheduler.get_lr()  # a later call before the first step is a real misuse: still said
        assert seen.count(SCHEDULER_NOT_STARTED) == 2
    finally:
        logger.removeHandler(catch)
