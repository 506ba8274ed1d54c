"""Phases of sequence length within one run (`data.seq_len_schedule`): BERT's and ELECTRA's practice
of pre-training most steps on short sequences and the rest on long ones.

`data.seq_len_schedule` lists the earlier phases as `SEQ_LEN:UNTIL`, UNTIL a fraction of
`train.steps`; the last phase runs at `data.seq_len` to the end. `[128:0.9]` with `data.seq_len=512`
and 1000 steps: steps 0-899 at 128 tokens, 900-999 at 512. Empty: the whole run at `data.seq_len`.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError

FORM = "give SEQ_LEN:UNTIL items, UNTIL a fraction of train.steps, e.g. data.seq_len_schedule=128:0.9 (then data.seq_len to the end)"


@dataclass(frozen=True)
class Phase:
    start: int  # first step (0-based) at this length
    end: int  # one past the last step
    seq_len: int


def _parse_item(item: str) -> tuple[int, float]:
    text = str(item).strip()
    length, sep, until = text.partition(":")
    try:
        if not sep:
            raise ValueError
        return int(length), float(until)
    except ValueError:
        raise UserError(f"data.seq_len_schedule item {text!r} is not SEQ_LEN:UNTIL", FORM) from None


def seq_len_phases(schedule: list[str], seq_len: int, steps: int) -> list[Phase]:
    """The run's phases in order; each mistake one UserError. Boundaries are UNTIL x steps, rounded."""
    phases, start, last_until = [], 0, 0.0
    for item in (item for item in schedule if str(item).strip()):  # `data.seq_len_schedule=` is none
        length, until = _parse_item(item)
        if length < 3:
            raise UserError(f"data.seq_len_schedule length {length} is too short", "use lengths of at least 3 ([CLS] token [SEP])")
        if not last_until < until < 1:  # NaN too
            raise UserError(f"data.seq_len_schedule fraction {until} in {item!r} is out of order or outside (0, 1)",
                            "give fractions that rise strictly between 0 and 1; the last phase, at data.seq_len, runs to the end")
        end = round(until * steps)
        if end <= start or end >= steps:
            raise UserError(f"data.seq_len_schedule phase {item!r} has no steps of its own out of train.steps={steps}, or leaves none to data.seq_len",
                            "space the fractions wider apart or raise train.steps")
        phases.append(Phase(start, end, length))
        start, last_until = end, until
    phases.append(Phase(start, steps, seq_len))
    return phases

