"""The files the project ships next to its code: configs/ (YAML presets), ds_configs/ (DeepSpeed JSON)
and launcher/. A wheel carries them inside the package (setup.py maps them there); a source checkout
keeps them at the repository root. Both layouts are looked up, the package first."""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]  # fast_electra_ds/
SHIPPED = ("configs", "ds_configs", "launcher")


def shipped_dir(kind: str) -> Path | None:
    """The directory holding the shipped `kind` (one of SHIPPED), or None when neither layout has it."""
    assert kind in SHIPPED, kind
    for root in (PACKAGE, PACKAGE.parent):
        if (root / kind).is_dir():
            return root / kind
    return None


def find_config_file(name: str, kind: str, suffixes: tuple[str, ...]) -> Path | None:
    """`name` as given when that file exists (a local file wins), else a bare name (`zero3.json`,
    `zero3`) or `<kind>/<name>` (the README's `ds_configs/zero3.json`, from any directory) among the
    shipped `kind`; None when neither exists."""
    given = Path(name)
    if given.is_file():
        return given
    directory = shipped_dir(kind)
    if directory is None or given.parent not in (Path("."), Path(kind)):  # any other folder: that path only
        return None
    for candidate in [given.name] + [given.name + suffix for suffix in suffixes if not given.name.endswith(suffix)]:
        if (directory / candidate).is_file():
            return directory / candidate
    return None


def shipped_names(kind: str, suffix: str) -> list[str]:
    directory = shipped_dir(kind)
    return sorted(p.name for p in directory.glob(f"*{suffix}")) if directory else []
