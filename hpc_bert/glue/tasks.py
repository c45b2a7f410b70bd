"""The nine GLUE tasks: where their files are, which columns hold what, and how to read them.

GLUE's standard layout is ``DATA_DIR/<TASK>/{train,dev,test}.tsv`` (``download_glue_data.py``
writes it). The files are tab separated with no quoting at all (sentences contain quote
characters, so a quote-aware reader would glue lines together). Every task but CoLA has a
header row, so columns are looked up by name; CoLA's files are headerless with the columns
source, label, original label, sentence. The hub's ``glue`` data set holds the same examples
with integer labels and other column names; ``examples_from_hub`` maps them onto the TSV form
so the rest of the code sees one representation.
"""
from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass
from typing import Iterable, Sequence

from hpc_bert.errors import UserError
from hpc_bert.hub import unreachable_reason

# Some GLUE rows (QQP, MNLI) are longer than csv's default field limit of 128 KiB allows.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True)
class Column:
    """One table column: the score ``metric`` of eval split ``split``, shown as ``label``."""
    label: str
    split: str
    metric: str


@dataclass(frozen=True)
class TaskSpec:
    name: str                       # canonical name, also the folder name under --data_dir
    hub_name: str                   # config name of the hub's `glue` data set
    text_a: str | int               # header name, or column index for headerless files
    text_b: str | int | None
    label: str | int                # header name, or column index for headerless files
    labels: tuple[str, ...] | None  # class labels as written in the TSV; None = regression
    dev_files: tuple[str, ...]      # evaluation files, split name = file stem
    columns: tuple[Column, ...]     # what goes into the GLUE table (first = main score)
    extra_metrics: tuple[str, ...] = ()  # reported in results.json and the CSV, not averaged
    has_header: bool = True

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def splits(self) -> tuple[str, ...]:
        return tuple(os.path.splitext(f)[0] for f in self.dev_files)

    @property
    def test_splits(self) -> tuple["TestSplit", ...]:
        return TEST_SPLITS[self.name]


@dataclass(frozen=True)
class TestSplit:
    """One unlabeled test file and the file of the GLUE server's zip that its predictions become.
    ``path`` is relative to the task folder, or to the data root when ``in_root`` (GLUE's AX)."""
    split: str            # also the hub's split name (AX: the hub's `ax` config, split `test`)
    path: str
    submission: str       # e.g. MNLI-m.tsv
    in_root: bool = False
    hub_config: str | None = None  # default: the task's hub_name


BINARY = ("0", "1")
NLI2 = ("entailment", "not_entailment")


def _one(label: str, metric: str, extra: tuple[str, ...] = ()) -> tuple[tuple[Column, ...], tuple[str, ...]]:
    return (Column(label, "dev", metric),), extra


# Order and main scores follow BERT's GLUE table (Devlin et al. 2019): MRPC/QQP F1, STS-B Spearman,
# CoLA Matthews correlation, accuracy elsewhere, MNLI matched and mismatched as two columns.
TASKS: dict[str, TaskSpec] = {}
for _spec in (
    TaskSpec("MNLI", "mnli", "sentence1", "sentence2", "gold_label", ("contradiction", "entailment", "neutral"),
             ("dev_matched.tsv", "dev_mismatched.tsv"),
             (Column("MNLI-m", "dev_matched", "accuracy"), Column("MNLI-mm", "dev_mismatched", "accuracy"))),
    TaskSpec("QQP", "qqp", "question1", "question2", "is_duplicate", BINARY, ("dev.tsv",),
             *_one("QQP", "f1", ("accuracy",))),
    TaskSpec("QNLI", "qnli", "question", "sentence", "label", NLI2, ("dev.tsv",), *_one("QNLI", "accuracy")),
    TaskSpec("SST-2", "sst2", "sentence", None, "label", BINARY, ("dev.tsv",), *_one("SST-2", "accuracy")),
    TaskSpec("CoLA", "cola", 3, None, 1, BINARY, ("dev.tsv",), *_one("CoLA", "mcc", ("accuracy",)),
             has_header=False),
    TaskSpec("STS-B", "stsb", "sentence1", "sentence2", "score", None, ("dev.tsv",),
             *_one("STS-B", "spearman", ("pearson",))),
    TaskSpec("MRPC", "mrpc", "#1 String", "#2 String", "Quality", BINARY, ("dev.tsv",),
             *_one("MRPC", "f1", ("accuracy",))),
    TaskSpec("RTE", "rte", "sentence1", "sentence2", "label", NLI2, ("dev.tsv",), *_one("RTE", "accuracy")),
    TaskSpec("WNLI", "wnli", "sentence1", "sentence2", "label", BINARY, ("dev.tsv",), *_one("WNLI", "accuracy")),
):
    TASKS[_spec.name] = _spec

TASK_ORDER = tuple(TASKS)
# The test files of download_glue_data.py's layout and the server's file names. The diagnostic
# set (AX) has MNLI's labels and is predicted by the MNLI model.
TEST_SPLITS: dict[str, tuple[TestSplit, ...]] = {
    name: (TestSplit("test", "test.tsv", f"{name}.tsv"),) for name in TASK_ORDER}
TEST_SPLITS["MNLI"] = (TestSplit("test_matched", "test_matched.tsv", "MNLI-m.tsv"),
                       TestSplit("test_mismatched", "test_mismatched.tsv", "MNLI-mm.tsv"),
                       TestSplit("ax", os.path.join("diagnostic", "diagnostic.tsv"), "AX.tsv", in_root=True,
                                 hub_config="ax"))
SUBMISSION_FILES = tuple(t.submission for name in TASK_ORDER for t in TEST_SPLITS[name])
# WNLI's dev set is adversarial (train and dev share sentences with flipped labels); BERT and
# most papers leave it out of the average, and so does our default.
DEFAULT_EXCLUDED_FROM_AVERAGE = ("WNLI",)
TABLE_COLUMNS: tuple[Column, ...] = tuple(c for t in TASKS.values() for c in t.columns)


def _key(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum())


_ALIASES = {_key(t.name): t.name for t in TASKS.values()} | {_key(t.hub_name): t.name for t in TASKS.values()}
_ALIASES |= {"stsbenchmark": "STS-B", "mnlim": "MNLI", "mnlimm": "MNLI"}


def get_task(name: str) -> TaskSpec:
    """Look a task up by any common spelling (MRPC, mrpc, sst2, SST-2, sts-b ...)."""
    canonical = _ALIASES.get(_key(str(name)))
    if canonical is None:
        raise UserError(f"unknown GLUE task {name!r}: choose one of {', '.join(TASK_ORDER)}")
    return TASKS[canonical]


@dataclass
class Example:
    text_a: str
    text_b: str | None
    label: str | float


def task_dir(data_dir: str, task: TaskSpec) -> str:
    """DATA_DIR/<TASK> in GLUE's layout; DATA_DIR itself if it already is the task folder."""
    nested = os.path.join(data_dir, task.name)
    if os.path.isdir(nested):
        return nested
    if os.path.isfile(os.path.join(data_dir, "train.tsv")) or os.path.isfile(os.path.join(data_dir, task.dev_files[0])):
        return data_dir
    return nested


def read_tsv_rows(path: str) -> list[list[str]]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        return [row for row in csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)]


def _resolve(spec: str | int | None, header: Sequence[str] | None, path: str) -> int | None:
    if spec is None or isinstance(spec, int):
        return spec
    names = [h.strip().lower() for h in header or ()]
    if spec.lower() not in names:
        raise UserError(f"{path} has no column {spec!r} (its header is {' | '.join(header or [])}): "
                        "it is not a GLUE file of this task; re-download GLUE or pass the right --task_name")
    return names.index(spec.lower())


def read_split(data_dir: str, task: TaskSpec, filename: str, with_labels: bool = True) -> list[Example]:
    """Read one TSV of ``task``; rows too short to hold the needed columns are skipped (QQP's
    train.tsv is known to have a few), but a file of mostly broken rows is an error."""
    path = os.path.join(task_dir(data_dir, task), filename)
    if not os.path.isfile(path):
        raise UserError(f"GLUE file {path} does not exist: pass --data_dir DIR where DIR/{task.name}/"
                        f"{filename} is in GLUE's standard layout (or {task.name}/train.tsv for the training set)")
    rows = read_tsv_rows(path)
    header = None
    if task.has_header and rows:
        header, rows = rows[0], rows[1:]
    ia, ib = _resolve(task.text_a, header, path), _resolve(task.text_b, header, path)
    il = _resolve(task.label, header, path) if with_labels else None
    needed = max(i for i in (ia, ib, il) if i is not None) + 1
    out: list[Example] = []
    skipped = 0
    for lineno, row in enumerate(rows, start=2 if header is not None else 1):
        if not row or row == [""]:
            continue
        if len(row) < needed:
            skipped += 1
            continue
        label: str | float = ""
        if il is not None:
            label = parse_label(task, row[il].strip(), f"{path}:{lineno}")
        out.append(Example(row[ia], row[ib] if ib is not None else None, label))
    if skipped and skipped > max(10, 0.01 * (len(out) + skipped)):
        raise UserError(f"{path}: {skipped} of {len(out) + skipped} rows have fewer than {needed} tab-separated "
                        "columns: the file is not in GLUE's format (check the delimiter and the task)")
    if skipped:
        print(f"hpc_bert: note: skipped {skipped} malformed row(s) of {path}", file=sys.stderr)
    if not out:
        raise UserError(f"{path} holds no examples: re-create the file")
    return out


def parse_label(task: TaskSpec, raw: str, where: str) -> str | float:
    if task.is_regression:
        try:
            return float(raw)
        except ValueError:
            raise UserError(f"{where}: score {raw!r} is not a number: {task.name} labels are similarity "
                            "scores in [0, 5]") from None
    if raw not in task.labels:  # type: ignore[operator]
        raise UserError(f"{where}: label {raw!r} is not one of {task.name}'s labels "
                        f"({', '.join(task.labels or ())}): fix the file or pass the right --task_name")
    return raw


def load_tsv_task(data_dir: str, task: TaskSpec, with_train: bool = True) -> dict[str, list[Example]]:
    """{'train': [...], <split>: [...] for each dev file}. Checks every file exists first so
    a missing dev file is reported before minutes of reading a large train.tsv."""
    files = (["train.tsv"] if with_train else []) + list(task.dev_files)
    for f in files:
        path = os.path.join(task_dir(data_dir, task), f)
        if not os.path.isfile(path):
            read_split(data_dir, task, f)  # raises the one-line error
    out = {}
    if with_train:
        out["train"] = read_split(data_dir, task, "train.tsv")
    for f in task.dev_files:
        out[os.path.splitext(f)[0]] = read_split(data_dir, task, f)
    return out


def read_test_split(data_dir: str, task: TaskSpec, test: TestSplit) -> tuple[list[str], list[Example]]:
    """(GLUE indices, unlabeled examples) of one test file. Test files all have a header (CoLA's
    too) and an `index` column (QQP's is `id`)."""
    path = os.path.join(data_dir if test.in_root else task_dir(data_dir, task), test.path)
    if not os.path.isfile(path):
        raise UserError(f"GLUE test file {path} does not exist: --do_predict needs GLUE's test files "
                        f"(download_glue_data.py writes them), or drop --do_predict")
    rows = read_tsv_rows(path)
    if not rows:
        raise UserError(f"{path} is empty: re-create the file")
    header, rows = rows[0], rows[1:]
    text_a, text_b = (task.text_a, task.text_b) if task.has_header else ("sentence", None)
    ia, ib = _resolve(text_a, header, path), _resolve(text_b, header, path)
    names = [h.strip().lower() for h in header]
    ii = _resolve("id" if "id" in names and "index" not in names else "index", header, path)
    needed = max(i for i in (ia, ib, ii) if i is not None) + 1
    indices, out = [], []
    for lineno, row in enumerate(rows, start=2):
        if not row or row == [""]:
            continue
        if len(row) < needed:  # every test row needs a prediction: a short one is an error, not a skip
            raise UserError(f"{path}:{lineno} has {len(row)} columns, fewer than the {needed} needed: the file "
                            "is not in GLUE's format; re-download it")
        indices.append(row[ii].strip())
        out.append(Example(row[ia], row[ib] if ib is not None else None, ""))
    return indices, out


# Column names and class names of the hub's `glue` data set (they differ from the TSV for MNLI).
_HUB_TEXT = {"cola": ("sentence", None), "sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
             "qqp": ("question1", "question2"), "stsb": ("sentence1", "sentence2"),
             "mnli": ("premise", "hypothesis"), "qnli": ("question", "sentence"),
             "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
             "ax": ("premise", "hypothesis")}
_HUB_LABELS = {"mnli": ("entailment", "neutral", "contradiction"), "ax": ("entailment", "neutral", "contradiction"),
               "qnli": NLI2, "rte": NLI2, "wnli": ("not_entailment", "entailment")}
_HUB_SPLIT = {"train": "train", "dev": "validation", "dev_matched": "validation_matched",
              "dev_mismatched": "validation_mismatched"}
HUB_DATASET = "nyu-mll/glue"


def examples_from_hub(task: TaskSpec, rows: Iterable[dict], label_names: Sequence[str] | None,
                      hub_config: str | None = None, unlabeled: bool = False) -> list[Example]:
    """Hub rows -> Examples with the TSV's label strings. The hub stores class indices; for the
    0/1 tasks the index is the TSV label, for the NLI tasks its class name is (WNLI's hub
    names are not_entailment/entailment = 0/1, matching the TSV). Test rows (label -1) get ''."""
    config = hub_config or task.hub_name
    a_col, b_col = _HUB_TEXT[config]
    names = label_names or _HUB_LABELS.get(config)
    out = []
    for row in rows:
        raw = row["label"]
        if unlabeled or raw is None:
            label: str | float = ""
        elif task.is_regression:
            label = float(raw)
        elif task.labels == BINARY:
            label = str(int(raw))
        else:
            label = str(names[int(raw)]) if names else str(raw)
        out.append(Example(row[a_col], row[b_col] if b_col else None, label))
    return out


def _open_hub(config: str, source: str, fix: str):
    """The DatasetDict of one config: from a local copy (save_to_disk folders or Parquet files in
    the hub repo's <config>/<split>-*.parquet layout) when ``source`` is a folder, else the hub."""
    try:
        import datasets  # optional dependency
    except ImportError:
        raise UserError(f"no --data_dir given and the `datasets` package (to read GLUE in the hub's schema) is "
                        f"not installed: pip install datasets, or {fix}") from None
    try:
        if os.path.isdir(source):
            folder = os.path.join(source, config)
            if os.path.isfile(os.path.join(folder, "dataset_dict.json")):
                return datasets.load_from_disk(folder)
            files = sorted(f for f in os.listdir(folder) if f.endswith(".parquet")) if os.path.isdir(folder) else []
            if not files:
                raise UserError(f"--dataset_name {source} has no {config}/ folder written by save_to_disk or "
                                f"holding <split>-*.parquet files: pass a copy of the hub's glue set, or {fix}")
            by_split: dict[str, list[str]] = {}
            for f in files:
                by_split.setdefault(f.split("-")[0], []).append(os.path.join(folder, f))
            return datasets.load_dataset("parquet", data_files=by_split)
        why = unreachable_reason()
        if why:
            raise UserError(f"could not load GLUE {config} from {source} ({why}): {fix}")
        return datasets.load_dataset(source, config)
    except UserError:
        raise
    except Exception as e:  # offline, hub down, auth: all end the same way for the user
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"could not load GLUE {config} from {source} ({first}): {fix}") from None


def _label_names(ds, split: str) -> list[str] | None:
    feature = ds[split].features.get("label")
    return list(getattr(feature, "names", []) or []) or None


def load_hub_task(task: TaskSpec, with_train: bool = True, source: str = HUB_DATASET) -> dict[str, list[Example]]:
    fix = f"pass --data_dir DIR with DIR/{task.name}/train.tsv in GLUE's standard layout"
    ds = _open_hub(task.hub_name, source, fix)
    splits = (["train"] if with_train else []) + list(task.splits)
    missing = [_HUB_SPLIT[s] for s in splits if _HUB_SPLIT[s] not in ds]
    if missing:
        raise UserError(f"GLUE {task.name} from {source} has no split {', '.join(missing)} (it has "
                        f"{', '.join(ds)}): pass a complete copy, or {fix}")
    names = None if task.is_regression else _label_names(ds, _HUB_SPLIT[splits[0]])
    return {s: examples_from_hub(task, ds[_HUB_SPLIT[s]], names) for s in splits}


def load_hub_test(task: TaskSpec, test: TestSplit, source: str = HUB_DATASET) -> tuple[list[str], list[Example]]:
    config = test.hub_config or task.hub_name
    ds = _open_hub(config, source, "pass --data_dir DIR holding GLUE's test files, or drop --do_predict")
    split = test.split if config == task.hub_name else "test"
    if split not in ds:
        raise UserError(f"GLUE {config} from {source} has no {split} split: pass a complete copy, or drop --do_predict")
    rows = ds[split]
    return [str(i) for i in rows["idx"]], examples_from_hub(task, rows, None, config, unlabeled=True)


def load_task(task: TaskSpec, data_dir: str | None, with_train: bool = True,
              dataset_name: str = HUB_DATASET) -> dict[str, list[Example]]:
    if data_dir:
        if not os.path.isdir(data_dir):
            raise UserError(f"--data_dir {data_dir} does not exist: pass the folder that holds "
                            f"{task.name}/train.tsv (GLUE's standard layout)")
        return load_tsv_task(data_dir, task, with_train)
    return load_hub_task(task, with_train, dataset_name)


def load_test(task: TaskSpec, data_dir: str | None, dataset_name: str = HUB_DATASET
              ) -> dict[str, tuple[list[str], list[Example]]]:
    """{test split: (indices, examples)} for every test split of the task. MNLI's model also
    predicts AX when the diagnostic set is there; without it the MNLI run goes on (with a note)
    and the submission lists AX as missing."""
    out = {}
    for test in task.test_splits:
        try:
            out[test.split] = (read_test_split(data_dir, task, test) if data_dir
                               else load_hub_test(task, test, dataset_name))
        except UserError as e:
            if not test.in_root:
                raise
            print(f"hpc_bert: note: no {test.submission} predictions ({e})", file=sys.stderr)
    return out
