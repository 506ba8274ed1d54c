"""Tasks: the official GLUE TSV layouts, custom tasks from a small YAML/JSON file, and one strict reader.

The GLUE layouts are those of the official download (`download_glue_data.py`, GLUE_DIR/<Task>/*.tsv):
tab-separated, no quoting (quote characters are literal text, as in transformers' GLUE processors),
a header row naming the columns, except CoLA's train.tsv/dev.tsv, which have none and hold
`source  label  original-annotation  sentence` by position. MNLI has two dev sets, dev_matched.tsv
and dev_mismatched.tsv, and its label is the `gold_label` column (dev files carry five annotator
labels before it). The papers (ELECTRA Table 2 and its successors) report dev-set scores; GLUE's
test labels are hidden, so test files (test.tsv; MNLI test_matched/test_mismatched.tsv; all with a
header and an `index` or `id` column) are only predicted, into the leaderboard's submission files
(CoLA.tsv, SST-2.tsv, ..., MNLI-m.tsv, MNLI-mm.tsv: `index<TAB>prediction`).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..errors import UserError

GLUE_URL_HINT = "the official GLUE layout (python download_glue_data.py --data_dir GLUE_DIR)"


@dataclass(frozen=True)
class Task:
    """A sentence or sentence-pair classification (or regression) task over TSV files.

    `text_a`, `text_b` and `label` are column names, or 0-based positions when `header` is False.
    `labels` lists the label strings (their order gives the class ids); None means regression
    on a float label. `dev` maps a suffix for metric names ("" for the only dev set, "m"/"mm" for
    MNLI) to a file name."""

    name: str
    directory: Path | None  # where the files are; None: GLUE_DIR/<glue_dir> is resolved at load time
    train: str
    dev: dict[str, str]
    text_a: str | int
    label: str | int
    metrics: tuple[str, ...]
    main_metric: str
    labels: tuple[str, ...] | None = None
    text_b: str | int | None = None
    header: bool = True
    glue_dir: str = ""
    positive_label: str | None = None  # the class F1 is computed for
    # The GLUE leaderboard's per-task score averages these metrics (MRPC, QQP, STS-B, MNLI m/mm).
    glue_score_metrics: tuple[str, ...] = field(default=())
    # Unlabelled test files (suffix -> file), predicted when present, and each one's submission file name.
    test: dict[str, str] = field(default_factory=dict)
    submission: dict[str, str] = field(default_factory=dict)
    test_text_a: str | int | None = None  # when the test files name the first text differently (CoLA)

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)


def _glue(name, glue_dir, text_a, label, labels, metrics, main, text_b=None, header=True, dev=None,
          positive=None, score=None, test=None, test_text_a=None) -> Task:
    test = test or {"": "test.tsv"}
    submission = {suffix: f"{glue_dir}-{suffix}.tsv" if suffix else f"{glue_dir}.tsv" for suffix in test}
    return Task(name=name, directory=None, glue_dir=glue_dir, train="train.tsv", dev=dev or {"": "dev.tsv"},
                text_a=text_a, text_b=text_b, label=label, labels=labels, metrics=metrics, main_metric=main,
                header=header, positive_label=positive, glue_score_metrics=score or (main,),
                test=test, submission=submission, test_text_a=test_text_a)


NLI3 = ("contradiction", "entailment", "neutral")
NLI2 = ("entailment", "not_entailment")
BINARY = ("0", "1")

# Main metric: what the ELECTRA paper reports per task (its Table 2/8 "dev" columns): Matthews
# correlation for CoLA, Spearman for STS-B, accuracy for the rest (MNLI matched). The GLUE
# leaderboard instead scores MRPC and QQP by the mean of F1 and accuracy, STS-B by the mean of
# Pearson and Spearman and MNLI by the mean of matched and mismatched accuracy: `glue_score_metrics`.
GLUE_TASKS: dict[str, Task] = {
    "cola": _glue("cola", "CoLA", text_a=3, label=1, labels=BINARY, header=False,
                  metrics=("mcc",), main="mcc", test_text_a="sentence"),
    "sst2": _glue("sst2", "SST-2", text_a="sentence", label="label", labels=BINARY,
                  metrics=("accuracy",), main="accuracy"),
    "mrpc": _glue("mrpc", "MRPC", text_a="#1 String", text_b="#2 String", label="Quality", labels=BINARY,
                  metrics=("accuracy", "f1"), main="accuracy", positive="1", score=("f1", "accuracy")),
    "stsb": _glue("stsb", "STS-B", text_a="sentence1", text_b="sentence2", label="score", labels=None,
                  metrics=("pearson", "spearman"), main="spearman", score=("pearson", "spearman")),
    "qqp": _glue("qqp", "QQP", text_a="question1", text_b="question2", label="is_duplicate", labels=BINARY,
                 metrics=("accuracy", "f1"), main="accuracy", positive="1", score=("f1", "accuracy")),
    "mnli": _glue("mnli", "MNLI", text_a="sentence1", text_b="sentence2", label="gold_label", labels=NLI3,
                  metrics=("accuracy",), main="accuracy_m", dev={"m": "dev_matched.tsv", "mm": "dev_mismatched.tsv"},
                  score=("accuracy_m", "accuracy_mm"), test={"m": "test_matched.tsv", "mm": "test_mismatched.tsv"}),
    "qnli": _glue("qnli", "QNLI", text_a="question", text_b="sentence", label="label", labels=NLI2,
                  metrics=("accuracy",), main="accuracy"),
    "rte": _glue("rte", "RTE", text_a="sentence1", text_b="sentence2", label="label", labels=NLI2,
                 metrics=("accuracy",), main="accuracy"),
    "wnli": _glue("wnli", "WNLI", text_a="sentence1", text_b="sentence2", label="label", labels=BINARY,
                  metrics=("accuracy",), main="accuracy"),
}
ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "mnli-m": "mnli", "mnli_m": "mnli"}

KNOWN_METRICS = ("accuracy", "f1", "mcc", "pearson", "spearman")


@dataclass
class Split:
    """Examples of one file: texts (and second texts for pairs) and labels (class ids or floats)."""

    path: Path
    text_a: list[str]
    text_b: list[str] | None
    labels: list[float] | list[int]

    def __len__(self) -> int:
        return len(self.labels)


def metric_names(task: Task) -> list[str]:
    """Every metric key a task's evaluation returns: `<metric>` or `<metric>_<dev suffix>`."""
    return [f"{m}_{suffix}" if suffix else m for suffix in task.dev for m in task.metrics]


# ----------------------------------------------------------------------------------------------
# Finding a task


def is_task_file(name: str) -> bool:
    return Path(name).suffix.lower() in (".yaml", ".yml", ".json")


def get_task(name: str, data_dir: str | Path | None = None) -> Task:
    """A GLUE task by name (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli) with its files under
    `data_dir` (GLUE_DIR holding <Task>/, or the task's own directory), or a custom task file."""
    if is_task_file(name):
        return load_task_file(name)
    key = ALIASES.get(name.lower(), name.lower())
    if key not in GLUE_TASKS:
        raise UserError(f"unknown task {name!r}",
                        f"use one of {', '.join(GLUE_TASKS)} or a custom task file (.yaml/.json)")
    task = GLUE_TASKS[key]
    if data_dir is None:
        raise UserError(f"task {key} needs its data directory", f"pass --data GLUE_DIR in {GLUE_URL_HINT}")
    data_dir = Path(data_dir)
    # GLUE_DIR/SST-2/train.tsv, or the task directory itself (GLUE_DIR/SST-2).
    directory = data_dir / task.glue_dir if (data_dir / task.glue_dir).is_dir() else data_dir
    if not (directory / task.train).is_file():
        raise UserError(f"missing {data_dir / task.glue_dir / task.train}",
                        f"pass --data GLUE_DIR holding {task.glue_dir}/ in {GLUE_URL_HINT}")
    return replace(task, directory=directory)


TASK_FILE_KEYS = {"name", "train", "dev", "test", "text_a", "text_b", "label", "labels", "metric", "header"}


def load_task_file(path: str | Path) -> Task:
    """A custom task from YAML or JSON, files relative to the task file:

    ```yaml
    name: reviews
    train: train.tsv            # TSV with a header row (header: false -> columns by 0-based position)
    dev: dev.tsv                # or a mapping {suffix: file} for several dev sets
    test: test.tsv              # optional, unlabelled (or its labels ignored): predicted into <name>.tsv
    text_a: sentence            # column of the (first) sentence
    text_b: null                # column of the second sentence of a pair, if any
    label: label
    labels: [negative, positive]   # or "regression" for a float label
    metric: accuracy            # or a list, the first is the main metric: accuracy, f1, mcc, pearson, spearman
    ```
    F1 is computed for the last label in `labels`."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"task file {path} does not exist", "pass an existing .yaml/.json task file or a GLUE task name")
    try:
        spec = json.loads(path.read_text()) if path.suffix.lower() == ".json" else yaml.load(path.read_text(), _yaml_loader())
    except (ValueError, yaml.YAMLError) as e:
        raise UserError(f"task file {path} is not valid {path.suffix[1:].upper()}: {str(e).splitlines()[0]}",
                        "fix its syntax") from None
    if not isinstance(spec, dict):
        raise UserError(f"task file {path} is not a mapping", "write keys like train:, dev:, text_a:, label:, labels:, metric:")
    unknown = sorted(set(spec) - TASK_FILE_KEYS)
    if unknown:
        raise UserError(f"task file {path}: unknown key {unknown[0]!r}", f"valid keys: {', '.join(sorted(TASK_FILE_KEYS))}")
    for key in ("train", "dev", "text_a", "label", "labels", "metric"):
        if spec.get(key) in (None, "", []):
            raise UserError(f"task file {path} has no {key!r}", "add it (see `fast-electra finetune --help`)")
    labels = spec["labels"]
    if labels == "regression":
        labels = None
    elif not isinstance(labels, list) or len(labels) < 2 or len(set(map(str, labels))) != len(labels):
        raise UserError(f"task file {path}: labels must be a list of at least two distinct labels or 'regression'",
                        "e.g. labels: [negative, positive]")
    metrics = spec["metric"] if isinstance(spec["metric"], list) else [spec["metric"]]
    for metric in metrics:
        if metric not in KNOWN_METRICS:
            raise UserError(f"task file {path}: unknown metric {metric!r}", f"use one of {', '.join(KNOWN_METRICS)}")
        if (metric in ("pearson", "spearman")) != (labels is None):
            raise UserError(f"task file {path}: metric {metric} does not fit "
                            f"{'a regression' if labels is None else 'a classification'} task",
                            "use pearson/spearman for regression, accuracy/f1/mcc for labels")
    if "f1" in metrics and labels is not None and len(labels) != 2:
        raise UserError(f"task file {path}: f1 needs exactly two labels", "use accuracy or mcc for more classes")
    dev = spec["dev"] if isinstance(spec["dev"], dict) else {"": spec["dev"]}
    if len(dev) > 1 and "" in dev:
        raise UserError(f"task file {path}: every dev set needs a name when there are several", "e.g. dev: {m: a.tsv, mm: b.tsv}")
    header = bool(spec.get("header", True))
    for key in ("text_a", "text_b", "label"):
        if spec.get(key) is not None and not header and not isinstance(spec[key], int):
            raise UserError(f"task file {path}: {key} must be a 0-based column number when header is false",
                            f"e.g. {key}: 0")
    first_dev = next(iter(dev))
    main = f"{metrics[0]}_{first_dev}" if first_dev else metrics[0]
    name = str(spec.get("name") or path.stem)
    test = {} if spec.get("test") in (None, "") else spec["test"] if isinstance(spec["test"], dict) else {"": spec["test"]}
    return Task(
        name=name, directory=path.parent, train=str(spec["train"]),
        dev={str(k): str(v) for k, v in dev.items()}, text_a=spec["text_a"], text_b=spec.get("text_b"),
        label=spec["label"], labels=None if labels is None else tuple(str(x) for x in labels),
        metrics=tuple(metrics), main_metric=main, header=header,
        positive_label=None if labels is None else str(labels[-1]), glue_score_metrics=(main,),
        test={str(k): str(v) for k, v in test.items()},
        submission={str(k): f"{name}-{k}.tsv" if k else f"{name}.tsv" for k in test},
    )


def _yaml_loader():
    """A safe YAML loader where yes/no/on/off stay strings: `labels: [no, yes]` means those labels
    (YAML 1.1 would read them as booleans); only true/false are booleans."""
    import re

    import yaml

    class TaskLoader(yaml.SafeLoader):
        pass

    TaskLoader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    TaskLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
                                     list("tTfF"))
    return TaskLoader


# ----------------------------------------------------------------------------------------------
# Reading


def read_split(task: Task, file_name: str) -> Split:
    """Read one TSV of `task`, checking every row: a problem is a UserError naming file, line and fix."""
    assert task.directory is not None, "resolve the task with get_task first"
    path = task.directory / file_name
    if not path.is_file():
        raise UserError(f"missing {path}", f"put {file_name} there ({_layout_hint(task)})")
    text_a, text_b, labels = [], [] if task.text_b is not None else None, []
    columns: dict | None = None if task.header else {name: name for name in _columns(task)}
    width = 0 if task.header else max(columns.values()) + 1
    for number, fields in _rows(path):
        if columns is None:  # the header row
            columns = {name: _column_index(path, fields, name, task) for name in _columns(task)}
            width = len(fields)
            continue
        if len(fields) < width:
            raise UserError(f"{path}:{number}: {len(fields)} columns, expected {width}",
                            f"fix the row (tab-separated, {_layout_hint(task)})")
        text_a.append(fields[columns[task.text_a]])
        if text_b is not None:
            text_b.append(fields[columns[task.text_b]])
        labels.append(_parse_label(task, path, number, fields[columns[task.label]]))
    if not labels:
        if columns is None or not task.header:
            raise UserError(f"{path} is empty", f"write the examples in {_layout_hint(task)}")
        raise UserError(f"{path} has a header but no examples", "add example rows below the header")
    return Split(path=path, text_a=text_a, text_b=text_b, labels=labels)


def read_test_split(task: Task, file_name: str) -> tuple[list[str], Split]:
    """An unlabelled test file: each row's id (its `index` or `id` column, else its number from 0)
    and its texts; the labels are placeholders (0), as GLUE's test labels are hidden."""
    assert task.directory is not None, "resolve the task with get_task first"
    path = task.directory / file_name
    text_a_column = task.text_a if task.test_text_a is None else task.test_text_a
    names = [c for c in (text_a_column, task.text_b) if c is not None]
    ids, text_a, text_b = [], [], [] if task.text_b is not None else None
    header = task.header or task.test_text_a is not None
    columns: dict | None = None if header else {name: name for name in names}
    id_column = None
    for number, fields in _rows(path):
        if columns is None:
            columns = {name: _column_index(path, fields, name, task) for name in names}
            stripped = [f.strip() for f in fields]
            id_column = next((stripped.index(n) for n in ("index", "id") if n in stripped), None)
            continue
        if len(fields) <= max(columns.values()):
            raise UserError(f"{path}:{number}: {len(fields)} columns, expected at least {max(columns.values()) + 1}",
                            f"fix the row (tab-separated, {_layout_hint(task)})")
        ids.append(fields[id_column].strip() if id_column is not None else str(len(ids)))
        text_a.append(fields[columns[text_a_column]])
        if text_b is not None:
            text_b.append(fields[columns[task.text_b]])
    if not ids:
        raise UserError(f"{path} holds no examples", "write the test examples below a header row, or remove the file")
    placeholder = 0.0 if task.is_regression else 0
    return ids, Split(path=path, text_a=text_a, text_b=text_b, labels=[placeholder] * len(ids))


def present_test_files(task: Task) -> dict[str, str]:
    """The task's test files that exist (suffix -> file name)."""
    assert task.directory is not None, "resolve the task with get_task first"
    return {suffix: name for suffix, name in task.test.items() if (task.directory / name).is_file()}


def _rows(path: Path):
    """(line number, tab-separated fields) of each non-blank line, streamed (MNLI's train.tsv is
    hundreds of MB). Lines end at \n only (a \r before it is dropped): str.splitlines would also
    break at characters such as \x85 or \u2028 inside a sentence. utf-8-sig drops a byte-order
    mark, which files saved by Windows tools start with."""
    with open(path, encoding="utf-8-sig", errors="replace", newline="\n") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if line.strip():  # blank lines (a trailing one is common) carry nothing
                yield number, line.split("\t")


def _columns(task: Task) -> list:
    return [c for c in (task.text_a, task.text_b, task.label) if c is not None]


def _column_index(path: Path, header: list[str], name, task: Task) -> int:
    if isinstance(name, int):
        if name >= len(header):
            raise UserError(f"{path}: no column {name} (the header has {len(header)})", f"use {_layout_hint(task)}")
        return name
    stripped = [h.strip() for h in header]
    if name not in stripped:
        raise UserError(f"{path}:1: no column {name!r} in the header ({', '.join(stripped)})",
                        f"use {_layout_hint(task)}")
    return stripped.index(name)


def _parse_label(task: Task, path: Path, number: int, value: str):
    value = value.strip()
    if task.labels is None:
        try:
            return float(value)
        except ValueError:
            raise UserError(f"{path}:{number}: label {value!r} is not a number",
                            "a regression task needs a numeric label in every row") from None
    if value not in task.labels:
        raise UserError(f"{path}:{number}: label {value!r} is not one of {', '.join(task.labels)}",
                        "fix the label (or list it in the task file's labels)")
    return task.labels.index(value)


def _layout_hint(task: Task) -> str:
    if task.glue_dir:
        return f"{GLUE_URL_HINT}, {task.glue_dir}/"
    return "the columns the task file names"


def load_task_data(task: Task) -> tuple[Split, dict[str, Split]]:
    """The training split and each dev split (by metric suffix)."""
    return read_split(task, task.train), {suffix: read_split(task, name) for suffix, name in task.dev.items()}
