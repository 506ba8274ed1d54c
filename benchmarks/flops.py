"""GFLOPs per sequence of main / aux / total, Original ELECTRA vs Fast-ELECTRA, counted by running real
models (transformers ElectraForPreTraining + the project's corrective-LM head, models/corrective_lm.py; ElectraForMaskedLM)
through torch.utils.flop_counter.FlopCounterMode under FakeTensorMode (nothing is allocated), with a
formula registered for CPU SDPA; cross-checked against the analytic count of accounting/flops.py and
printed beside the poster's table.

    python benchmarks/flops.py [--settings paper-base paper-large] [--seq-len 512 --vocab-size 128000 ...]

Training = forward + backward (Original: main and aux both trained; Fast: main trained, the frozen aux
forward only). Row "Fast (masked-only head)": what this project's `fast` method spends, with the
aux MLM head applied only at the masked positions (mask_prob · s)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from benchmarks.common import RESULTS, add_setting_args, markdown_table, settings_from_args, publish
from fast_electra_ds.accounting.flop_counter import count_flops, count_forward_backward
from fast_electra_ds.accounting.flops import paper_flops
from fast_electra_ds.accounting.paper import PAPER_TABLES, PaperAux, PaperMain, PaperSetting

PARTS = ["main", "original_aux", "original_total", "fast_aux", "fast_total", "fast_masked_aux", "fast_masked_total"]


def counted_flops(setting: PaperSetting) -> dict[str, float]:
    """FLOPs per sequence counted with FlopCounterMode (batch of one sequence)."""
    s = setting.seq_len
    masked = max(1, round(setting.mask_prob * s))
    with FakeTensorMode(allow_non_fake_inputs=False):
        main = PaperMain(setting).train()
        aux = PaperAux(setting).train()
        ids = torch.zeros(1, s, dtype=torch.long)
        labels = torch.zeros(1, s, dtype=torch.long)
        selected = torch.arange(masked)  # flat indices of the masked positions
        main_counts = count_forward_backward(lambda: main(ids, labels))
        aux_counts = count_forward_backward(lambda: aux(ids))
        aux.eval().requires_grad_(False)
        with torch.no_grad():
            fast_aux, _ = count_flops(lambda: aux.logits(ids))
            fast_masked_aux, _ = count_flops(lambda: aux.logits(ids, selected))
    m, oa = float(main_counts["total"]), float(aux_counts["total"])
    return {"main": m, "original_aux": oa, "original_total": m + oa, "fast_aux": float(fast_aux),
            "fast_total": m + fast_aux, "fast_masked_aux": float(fast_masked_aux), "fast_masked_total": m + fast_masked_aux,
            "main_forward": float(main_counts["forward"]), "main_backward": float(main_counts["backward"]),
            "aux_forward": float(aux_counts["forward"]), "aux_backward": float(aux_counts["backward"]),
            "masked_positions": masked}


def run(settings: list[PaperSetting], out_dir: Path | None = RESULTS, quiet: bool = False) -> dict:
    results = {}
    for setting in settings:
        counted = counted_flops(setting)
        analytic = paper_flops(setting)
        paper = PAPER_TABLES.get(setting.name) if setting.seq_len == 512 and setting.vocab_size == 128_000 else None
        results[setting.name] = {"setting": vars(setting), "counted": counted, "analytic": analytic, "paper": paper}
    publish("flops", results, render(results), out_dir, quiet)
    return results


def render(results: dict) -> str:
    header = ["Setting", "Method", "Main (ours)", "Aux (ours)", "Total (ours)", "Main (paper)", "Aux (paper)",
              "Total (paper)", "ours/paper main", "ours/paper aux", "ours/paper total", "counted/analytic total"]
    rows = []
    notes = []
    for name, r in results.items():
        c, a, p = r["counted"], r["analytic"], r["paper"] or {}
        g = 1e9
        for label, aux_key, total_key in [("Original", "original_aux", "original_total"), ("Fast-ELECTRA", "fast_aux", "fast_total"),
                                          ("Fast, aux head at masked only", "fast_masked_aux", "fast_masked_total")]:
            pm, pa, pt = p.get("main"), p.get(aux_key), p.get(total_key)
            rows.append([name, label, c["main"] / g, c[aux_key] / g, c[total_key] / g, pm, pa, pt,
                         _ratio(c["main"] / g, pm), _ratio(c[aux_key] / g, pa), _ratio(c[total_key] / g, pt),
                         c[total_key] / a[total_key]])
        rows.append([name, "Ratio Fast/Original", 1.0, c["fast_aux"] / c["original_aux"], c["fast_total"] / c["original_total"],
                     1.0 if p else None, _ratio(p.get("fast_aux"), p.get("original_aux")), _ratio(p.get("fast_total"), p.get("original_total")),
                     None, None, None, None])
        rows.append([name, "Ratio masked-only/Original", 1.0, c["fast_masked_aux"] / c["original_aux"],
                     c["fast_masked_total"] / c["original_total"], None, None, None, None, None, None, None])
        saving = 1 - c["fast_masked_aux"] / c["fast_aux"]
        notes.append(f"- {name}: the aux head at the {c['masked_positions']} masked positions only (of {r['setting']['seq_len']}) "
                     f"cuts the frozen aux's forward by {saving:.0%} ({c['fast_aux'] / g:.1f} → {c['fast_masked_aux'] / g:.1f} GFLOPs) "
                     f"and the Fast total by {1 - c['fast_masked_total'] / c['fast_total']:.1%}; "
                     f"analytic (paper formula) main/aux/total: {a['main'] / g:.1f} / {a['original_aux'] / g:.1f} / {a['original_total'] / g:.1f}; "
                     f"backward/forward counted: main {c['main_backward'] / c['main_forward']:.3f}, aux {c['aux_backward'] / c['aux_forward']:.3f}.")
    return ("GFLOPs per sequence (FlopCounterMode over real models, training = forward + backward)\n\n"
            + markdown_table(header, rows, digits=3).replace(".000 |", " |") + "\n\n" + "\n".join(notes))


def _ratio(a, b):
    return a / b if a is not None and b else None


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setting_args(parser)
    parser.add_argument("--out", default=str(RESULTS), help="directory for flops.json / flops.md ('' to write nothing)")
    args = parser.parse_args(argv)
    return run(settings_from_args(args), Path(args.out) if args.out else None)


if __name__ == "__main__":
    main()
