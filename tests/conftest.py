"""Shared fixtures: a real corpus (Python's pydoc topics), a tokenizer and token shards made once per
session. The helpers the tests call are in tests/helpers.py."""
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def corpus(tmp_path_factory) -> Path:
    from fast_electra_ds.data.text import write_pydoc_corpus

    path = tmp_path_factory.mktemp("corpus") / "pydoc.txt"
    write_pydoc_corpus(path)
    return path


@pytest.fixture(scope="session")
def prepared(corpus, tmp_path_factory) -> dict:
    """A 2000-token sentencepiece tokenizer and token shards of the pydoc corpus."""
    from fast_electra_ds.data.tiny import prepare_tiny_corpus

    return prepare_tiny_corpus(tmp_path_factory.mktemp("prepared"), corpus=corpus)


@pytest.fixture(scope="module")
def world_of_one(tmp_path_factory):
    """A gloo process group of one rank in this process, for code that calls collectives."""
    import torch.distributed as dist

    if dist.is_initialized():
        yield
        return
    store = dist.FileStore(str(tmp_path_factory.mktemp("store") / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    yield
    dist.destroy_process_group()
