"""GLUE readers on files in the official column layout of each task, custom task files, and the
one-line errors for malformed files."""
import json
from pathlib import Path

import pytest

from fast_electra_ds.errors import UserError
from fast_electra_ds.finetune.tasks import GLUE_TASKS, get_task, load_task_data, load_task_file, metric_names

# Two rows per task in the real layout of the official GLUE download (rows copied from or shaped
# like the real files): the header (none for CoLA), the columns, the label strings. Quote
# characters are literal in GLUE's TSVs, so some rows hold an unbalanced '"'.
MNLI_HEAD = "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2"
LAYOUTS = {
    "cola": ("CoLA", {
        "train.tsv": "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.\n"
                     "gj04\t0\t*\tThey drank the pub.\n",
        "dev.tsv": "gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n"
                   "gj04\t0\t*\tThe more does Bill smoke, the more Susan hates him.\n",
    }, [("Our friends won't buy this analysis, let alone the next one we propose.", None, 1),
        ("They drank the pub.", None, 0)]),
    "sst2": ("SST-2", {
        "train.tsv": "sentence\tlabel\nhide new secretions from the parental units \t0\n"
                     "contains no wit , only labored gags \t0\nthat loves its characters \t1\n",
        "dev.tsv": "sentence\tlabel\nit 's a charming and often affecting journey . \t1\n"
                   "unflinchingly bleak and desperate \t0\n",
    }, [("hide new secretions from the parental units ", None, 0), ("contains no wit , only labored gags ", None, 0),
        ("that loves its characters ", None, 1)]),
    "mrpc": ("MRPC", {
        "train.tsv": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                     "1\t702876\t702977\tAmrozi accused his brother , whom he called \" the witness \" , of deliberately distorting his evidence .\tReferring to him as only \" the witness \" , Amrozi accused his brother of deliberately distorting his evidence .\n"
                     "0\t2108705\t2108831\tYucaipa owned Dominick 's before selling the chain to Safeway in 1998 for $ 2.5 billion .\tYucaipa bought Dominick 's in 1995 for $ 693 million and sold it to Safeway for $ 1.8 billion in 1998 .\n",
        "dev.tsv": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                   "1\t1355540\t1355592\tHe said the foodservice pie business doesn 't fit the company 's long-term growth strategy .\t\" The foodservice pie business does not fit our long-term growth strategy .\n",
    }, [("Amrozi accused his brother , whom he called \" the witness \" , of deliberately distorting his evidence .",
         "Referring to him as only \" the witness \" , Amrozi accused his brother of deliberately distorting his evidence .", 1),
        ("Yucaipa owned Dominick 's before selling the chain to Safeway in 1998 for $ 2.5 billion .",
         "Yucaipa bought Dominick 's in 1995 for $ 693 million and sold it to Safeway for $ 1.8 billion in 1998 .", 0)]),
    "stsb": ("STS-B", {
        "train.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                     "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane is taking off.\t5.000\n"
                     "1\tmain-captions\tMSRvid\t2012test\t0004\tnone\tnone\tA man is playing a large flute.\tA man is playing a flute.\t3.800\n",
        "dev.tsv": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                   "0\tmain-captions\tMSRvid\t2012test\t0000\tnone\tnone\tA man with a hard hat is dancing.\tA man wearing a hard hat is dancing.\t5.000\n",
    }, [("A plane is taking off.", "An air plane is taking off.", 5.0),
        ("A man is playing a large flute.", "A man is playing a flute.", 3.8)]),
    "qqp": ("QQP", {
        "train.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                     "133273\t213221\t213222\tHow is the life of a math student? Could you describe your own experiences?\tWhich level of prepration is enough for the exam jlpt5?\t0\n"
                     "402555\t536040\t536041\tHow do I control my horny emotions?\tHow do you control your horniness?\t1\n",
        "dev.tsv": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n"
                   "201359\t303345\t303346\tWhy are African-Americans so beautiful?\tWhy are hispanics so beautiful?\t0\n",
    }, [("How is the life of a math student? Could you describe your own experiences?",
         "Which level of prepration is enough for the exam jlpt5?", 0),
        ("How do I control my horny emotions?", "How do you control your horniness?", 1)]),
    "mnli": ("MNLI", {
        "train.tsv": f"{MNLI_HEAD}\tlabel1\tgold_label\n"
                     "0\t31193\t31193n\tgovernment\t( ( Conceptually ( cream skimming ) ) ...\t( ( ( Product and ) geography ) ...\t(ROOT (S ...))\t(ROOT (S ...))\tConceptually cream skimming has two basic dimensions - product and geography.\tProduct and geography are what make cream skimming work. \tneutral\tneutral\n"
                     "1\t101457\t101457e\ttelephone\t( you ...\t( You ...\t(ROOT ...)\t(ROOT ...)\tyou know during the season and i guess at at your level uh you lose them to the next level if \" if they decide to recall the the parent team\tYou lose the things to the following level if the people recall.\tentailment\tentailment\n",
        "dev_matched.tsv": f"{MNLI_HEAD}\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n"
                           "0\t63735\t63735n\tslate\t( ...\t( ...\t(ROOT ...)\t(ROOT ...)\tThe new rights are nice enough\tEveryone really likes the newest benefits \tneutral\tentailment\tneutral\tneutral\tneutral\tneutral\n",
        "dev_mismatched.tsv": f"{MNLI_HEAD}\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n"
                              "0\t75290\t75290c\tletters\t( ...\t( ...\t(ROOT ...)\t(ROOT ...)\tYour contribution helped make it possible for us to provide our students with a quality education.\tYour contributions were of no help with our students' education.\tcontradiction\tcontradiction\tcontradiction\tcontradiction\tcontradiction\tcontradiction\n"
                              "1\t133794\t133794c\tverbatim\t( ...\t( ...\t(ROOT ...)\t(ROOT ...)\tThe answer has nothing to do with their cause, however, but with the simple fact that dictionaries are not exercises in bi-unique substitutability\tDictionaries are indeed exercises in bi-unique substitutability.\tcontradiction\tcontradiction\tcontradiction\tcontradiction\tcontradiction\tcontradiction\n",
    }, [("Conceptually cream skimming has two basic dimensions - product and geography.",
         "Product and geography are what make cream skimming work. ", 2),
        ("you know during the season and i guess at at your level uh you lose them to the next level if \" if they decide to recall the the parent team",
         "You lose the things to the following level if the people recall.", 1)]),
    "qnli": ("QNLI", {
        "train.tsv": "index\tquestion\tsentence\tlabel\n"
                     "0\tWhen did the third Digimon series begin?\tUnlike the two seasons before it and most of the seasons that followed, Digimon Tamers takes a darker and more realistic approach to its story.\tnot_entailment\n"
                     "1\tWhich missile batteries often have individual launchers several kilometres from one another?\tWhen MANPADS is operated by specialists, batteries may have several dozen teams deploying separately in small sections; self-propelled air defence guns may deploy in pairs.\tnot_entailment\n"
                     "2\tWhat two things does Popper argue Tarski's theory involves in an evaluation of truth?\tHe bases this interpretation on the fact that examples such as the one described above refer to two things: assertions and the facts to which they refer.\tentailment\n",
        "dev.tsv": "index\tquestion\tsentence\tlabel\n"
                   "0\tWhat came into force after the new constitution was herald?\tAs of that day, the new constitution heralding the Second Republic came into force.\tentailment\n",
    }, [("When did the third Digimon series begin?",
         "Unlike the two seasons before it and most of the seasons that followed, Digimon Tamers takes a darker and more realistic approach to its story.", 1),
        ("Which missile batteries often have individual launchers several kilometres from one another?",
         "When MANPADS is operated by specialists, batteries may have several dozen teams deploying separately in small sections; self-propelled air defence guns may deploy in pairs.", 1),
        ("What two things does Popper argue Tarski's theory involves in an evaluation of truth?",
         "He bases this interpretation on the fact that examples such as the one described above refer to two things: assertions and the facts to which they refer.", 0)]),
    "rte": ("RTE", {
        "train.tsv": "index\tsentence1\tsentence2\tlabel\n"
                     "0\tNo Weapons of Mass Destruction Found in Iraq Yet.\tWeapons of Mass Destruction Found in Iraq.\tnot_entailment\n"
                     "1\tA place of sorrow, after Pope John Paul II died, became a place of celebration.\tPope Benedict XVI is the new leader of the Roman Catholic Church.\tentailment\n",
        "dev.tsv": "index\tsentence1\tsentence2\tlabel\n"
                   "0\tDana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44.\tChristopher Reeve had an accident.\tnot_entailment\n",
    }, [("No Weapons of Mass Destruction Found in Iraq Yet.", "Weapons of Mass Destruction Found in Iraq.", 1),
        ("A place of sorrow, after Pope John Paul II died, became a place of celebration.",
         "Pope Benedict XVI is the new leader of the Roman Catholic Church.", 0)]),
    "wnli": ("WNLI", {
        "train.tsv": "index\tsentence1\tsentence2\tlabel\n"
                     "0\tI stuck a pin through a carrot. When I pulled the pin out, it had a hole.\tThe carrot had a hole.\t1\n"
                     "1\tJohn couldn't see the stage with Billy in front of him because he is so short.\tJohn is so short.\t1\n"
                     "2\tThe police arrested all of the gang members. They were trying to stop the drug trade in the neighborhood.\tThe police were trying to stop the drug trade in the neighborhood.\t0\n",
        "dev.tsv": "index\tsentence1\tsentence2\tlabel\n"
                   "0\tThe drain is clogged with hair. It has to be cleaned.\tThe hair has to be cleaned.\t0\n",
    }, [("I stuck a pin through a carrot. When I pulled the pin out, it had a hole.", "The carrot had a hole.", 1),
        ("John couldn't see the stage with Billy in front of him because he is so short.", "John is so short.", 1),
        ("The police arrested all of the gang members. They were trying to stop the drug trade in the neighborhood.",
         "The police were trying to stop the drug trade in the neighborhood.", 0)]),
}


def write_glue(root: Path, task: str, overrides: dict | None = None) -> Path:
    directory, files, _ = LAYOUTS[task]
    for name, text in {**files, **(overrides or {})}.items():
        if text is not None:
            (root / directory).mkdir(parents=True, exist_ok=True)
            (root / directory / name).write_text(text)
    return root


def test_every_glue_task_has_a_layout_here():
    assert set(LAYOUTS) == set(GLUE_TASKS)


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_reader_accepts_the_official_layout(tmp_path, name):
    write_glue(tmp_path, name)
    task = get_task(name, tmp_path)
    train, dev = load_task_data(task)
    expected = LAYOUTS[name][2]
    assert train.text_a == [a for a, _, _ in expected]
    assert train.text_b == (None if expected[0][1] is None else [b for _, b, _ in expected])
    assert train.labels == [label for _, _, label in expected]
    dev_files = [f for f in LAYOUTS[name][1] if f != "train.tsv"]
    assert len(dev) == len(dev_files)
    for split in dev.values():
        assert len(split) == LAYOUTS[name][1][split.path.name].count("\n") - (0 if name == "cola" else 1)


def test_mnli_has_matched_and_mismatched_dev_sets(tmp_path):
    write_glue(tmp_path, "mnli")
    task = get_task("mnli", tmp_path)
    _, dev = load_task_data(task)
    assert dev["m"].path.name == "dev_matched.tsv" and dev["mm"].path.name == "dev_mismatched.tsv"
    assert dev["m"].labels == [task.labels.index("neutral")]  # gold_label, not annotator label1
    assert dev["mm"].labels == [task.labels.index("contradiction")] * 2
    assert metric_names(task) == ["accuracy_m", "accuracy_mm"] and task.main_metric == "accuracy_m"


def test_byte_order_mark_crlf_and_unicode_line_separators(tmp_path):
    """A BOM before the header, Windows line ends, and \x85/\u2028 inside a sentence (which
    str.splitlines would break at) are read as the text they are."""
    header = LAYOUTS["mrpc"][1]["train.tsv"].splitlines()[0]
    train = f"\ufeff{header}\r\n1\t1\t2\tUp\x85down .\tLeft\u2028right .\r\n0\t3\t4\tA .\tB .\r\n"
    write_glue(tmp_path, "mrpc", {"train.tsv": train})
    split, _ = load_task_data(get_task("mrpc", tmp_path))
    assert split.text_a == ["Up\x85down .", "A ."] and split.text_b == ["Left\u2028right .", "B ."]
    assert split.labels == [1, 0]


def test_the_task_directory_itself_is_accepted(tmp_path):
    write_glue(tmp_path, "rte")
    train, _ = load_task_data(get_task("RTE", tmp_path / "RTE"))
    assert len(train) == 2


def _error(tmp_path, name, overrides) -> str:
    write_glue(tmp_path, name, overrides)
    with pytest.raises(UserError) as info:
        load_task_data(get_task(name, tmp_path))
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_column_names_file_and_column(tmp_path):
    message = _error(tmp_path, "sst2", {"train.tsv": "sentence\tlabl\ngood film\t1\n"})
    assert "SST-2/train.tsv:1: no column 'label' in the header (sentence, labl)" in message
    assert "official GLUE layout" in message


def test_bad_label_names_file_line_and_valid_labels(tmp_path):
    message = _error(tmp_path, "sst2", {"dev.tsv": "sentence\tlabel\ngood film\t1\nbad film\tnegative\n"})
    assert "SST-2/dev.tsv:3: label 'negative' is not one of 0, 1" in message and "fix the label" in message
    message = _error(tmp_path, "rte", {"train.tsv": "index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailed\n"})
    assert "RTE/train.tsv:2: label 'entailed' is not one of entailment, not_entailment" in message


def test_bad_regression_label(tmp_path):
    header = LAYOUTS["stsb"][1]["dev.tsv"].splitlines()[0]
    message = _error(tmp_path, "stsb", {"dev.tsv": f"{header}\n0\tg\tf\ty\t1\tn\tn\ta\tb\tfive\n"})
    assert "STS-B/dev.tsv:2: label 'five' is not a number" in message


def test_empty_and_header_only_files(tmp_path):
    assert "SST-2/train.tsv is empty" in _error(tmp_path, "sst2", {"train.tsv": ""})
    assert "CoLA/dev.tsv is empty" in _error(tmp_path / "c", "cola", {"dev.tsv": "\n\n"})
    assert "QNLI/dev.tsv has a header but no examples" in _error(tmp_path / "q", "qnli", {"dev.tsv": "index\tquestion\tsentence\tlabel\n"})


def test_short_row_and_missing_files(tmp_path):
    message = _error(tmp_path, "mrpc", {"train.tsv": "Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t7\t8\tonly one sentence\n"})
    assert "MRPC/train.tsv:2: 4 columns, expected 5" in message
    message = _error(tmp_path / "m", "mnli", {"dev_mismatched.tsv": None})
    assert "missing" in message and "MNLI/dev_mismatched.tsv" in message
    with pytest.raises(UserError, match=r"missing .*QQP/train.tsv; pass --data GLUE_DIR holding QQP/"):
        get_task("qqp", tmp_path / "nothing")


def test_cola_with_a_header_row_is_refused(tmp_path):
    """The original CoLA train/dev files have no header; a header row would be read as an example."""
    message = _error(tmp_path, "cola", {"train.tsv": "source\tlabel\tauthor\tsentence\ngj04\t1\t\tFine.\n"})
    assert "CoLA/train.tsv:1: label 'label' is not one of 0, 1" in message


def test_unknown_task(tmp_path):
    with pytest.raises(UserError, match="unknown task 'sst3'; use one of cola, sst2"):
        get_task("sst3", tmp_path)


# ----------------------------------------------------------------------------------------------
# Custom tasks


def test_custom_yaml_task_pairs_and_labels(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "tr.tsv").write_text("id\tpremise\thypothesis\tverdict\n1\tA cat sat.\tAn animal sat.\tyes\n2\tIt rained.\tIt was dry.\tno\n")
    (tmp_path / "data" / "dv.tsv").write_text("id\tpremise\thypothesis\tverdict\n1\tA dog ran.\tA dog moved.\tyes\n")
    (tmp_path / "task.yaml").write_text("name: entail\ntrain: data/tr.tsv\ndev: data/dv.tsv\ntext_a: premise\n"
                                        "text_b: hypothesis\nlabel: verdict\nlabels: [no, yes]\nmetric: [f1, accuracy]\n")
    task = get_task(str(tmp_path / "task.yaml"))
    train, dev = load_task_data(task)
    assert task.name == "entail" and task.main_metric == "f1" and task.positive_label == "yes"
    assert train.text_a == ["A cat sat.", "It rained."] and train.text_b == ["An animal sat.", "It was dry."]
    assert train.labels == [1, 0] and dev[""].labels == [1]


def test_custom_json_regression_headerless(tmp_path):
    (tmp_path / "a.tsv").write_text("0.5\tfirst\n2.25\tsecond\n")
    (tmp_path / "t.json").write_text(json.dumps({"train": "a.tsv", "dev": {"x": "a.tsv"}, "header": False,
                                                 "text_a": 1, "label": 0, "labels": "regression", "metric": ["spearman", "pearson"]}))
    task = load_task_file(tmp_path / "t.json")
    train, dev = load_task_data(task)
    assert task.is_regression and task.main_metric == "spearman_x" and task.name == "t"
    assert train.labels == [0.5, 2.25] and dev["x"].text_a == ["first", "second"]


@pytest.mark.parametrize("spec, expected", [
    ("train: a.tsv\ndev: a.tsv\ntext_a: s\nlabel: l\nlabels: [a, b]\nmetric: accuracy\ncolour: red\n", "unknown key 'colour'"),
    ("train: a.tsv\ndev: a.tsv\ntext_a: s\nlabel: l\nlabels: [a, b]\n", "has no 'metric'"),
    ("train: a.tsv\ndev: a.tsv\ntext_a: s\nlabel: l\nlabels: [a, b]\nmetric: pearson\n", "metric pearson does not fit a classification task"),
    ("train: a.tsv\ndev: a.tsv\ntext_a: s\nlabel: l\nlabels: [a, b, c]\nmetric: f1\n", "f1 needs exactly two labels"),
    ("train: a.tsv\ndev: a.tsv\ntext_a: s\nlabel: l\nlabels: [a]\nmetric: accuracy\n", "at least two distinct labels"),
    ("train: [oops\n", "is not valid YAML"),
    ("train: a.tsv\ndev: a.tsv\ntext_a: s\nlabel: 0\nlabels: [a, b]\nmetric: mcc\nheader: false\n", "text_a must be a 0-based column number"),
])
def test_custom_task_file_errors(tmp_path, spec, expected):
    (tmp_path / "t.yaml").write_text(spec)
    with pytest.raises(UserError, match=expected):
        load_task_file(tmp_path / "t.yaml")


def test_custom_task_uses_the_same_strict_reader(tmp_path):
    (tmp_path / "a.tsv").write_text("s\tl\ngood\tpositive\nbad\tmeh\n")
    (tmp_path / "t.yaml").write_text("train: a.tsv\ndev: a.tsv\ntext_a: s\nlabel: l\nlabels: [negative, positive]\nmetric: accuracy\n")
    with pytest.raises(UserError, match=r"a.tsv:3: label 'meh' is not one of negative, positive"):
        load_task_data(load_task_file(tmp_path / "t.yaml"))
