"""Look at a local data file before `datasets` reads it, so that a bad file stops the run in one line that names the
file, the line and the fix (instead of a `DatasetGenerationError` traceback that may blame another file).

Line numbers are the file's own (1-based, the header is line 1), as an editor shows them.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict, Value

from hftransfer.errors import DataError

logger = logging.getLogger("hftransfer")

SCAN_LIMIT_BYTES = 256 * 2**20
"""Files larger than this are not scanned line by line (datasets' own error is then reported, shortened)."""
MISSING_LABELS = frozenset({"", "nan", "null", "none", "<na>", "n/a", "#n/a"})
"""Label cells (stripped, lower-cased) that mean "no label". Text columns keep such strings as text (SST-2 has
sentences that are literally `null`); only the label column reads them as missing."""
_SHOWN = 5


@dataclass
class FileFacts:
    """What a scan found: the columns, and the file line of each data row (row i of the split is on lines[i])."""

    columns: list[str] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    unlabelled: list[int] = field(default_factory=list)
    """File lines whose label cell (of `label_column`, when given) is missing."""


def _fail(key: str, path: str, problem: str) -> DataError:
    if key.startswith("--"):  # a command-line option: `--file PATH ...`
        return DataError(f"{key} {path} {problem}")
    return DataError(f"{key}: {path} {problem}" if key else f"{path} {problem}")


def check_data_file(path: str, key: str, label_column: str | None = None) -> FileFacts | None:
    """Refuse a file that cannot be loaded: a folder, missing, empty, header only, not UTF-8, a broken JSON line or a
    row with the wrong number of fields. Returns the columns and row lines (None when the file is not scanned)."""
    file = Path(path)
    if file.is_dir():
        raise _fail(key, path, "is a folder; give a csv/tsv/json/jsonl/parquet file (image folders: data.*_dir).")
    if not file.exists():
        raise _fail(key, path, "does not exist.")
    size = file.stat().st_size
    if size == 0:
        raise _fail(key, path, "is empty; give a file with a header and data rows.")
    suffix = file.suffix.lower()
    if suffix == ".parquet":
        return _parquet_facts(path, key)
    if size > SCAN_LIMIT_BYTES or suffix not in (".csv", ".tsv", ".json", ".jsonl"):
        return None
    text = _utf8_text(file, key)
    if not text.strip():
        raise _fail(key, path, "is empty (only blank lines); give a file with a header and data rows.")
    if suffix in (".csv", ".tsv"):
        return _delimited_facts(text, path, key, "\t" if suffix == ".tsv" else ",", label_column)
    return _json_facts(text, path, key, label_column)


def _utf8_text(file: Path, key: str) -> str:
    raw = file.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise _fail(
            key, str(file), f"line {line} is not UTF-8 text (byte 0x{raw[err.start]:02x}); re-save the file as UTF-8."
        ) from err


def _delimited_facts(text: str, path: str, key: str, delimiter: str, label_column: str | None) -> FileFacts:
    # The same dialect the loader uses: TSV without quoting (SST-2 sentences start with quotes), CSV with it.
    quoting = csv.QUOTE_NONE if delimiter == "\t" else csv.QUOTE_MINIMAL
    reader = csv.reader(text.splitlines(), delimiter=delimiter, quoting=quoting)
    facts = FileFacts()
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # blank lines are skipped by the loader too
            if not facts.columns:
                facts.columns = row
                continue
            if len(row) != len(facts.columns):
                name = "tabs" if delimiter == "\t" else "commas"
                raise _fail(
                    key,
                    path,
                    f"line {reader.line_num} has {len(row)} fields but the header has {len(facts.columns)}; "
                    f"fix that line (stray or missing {name}).",
                )
            facts.lines.append(reader.line_num)
            if label_column in facts.columns and _missing(row[facts.columns.index(label_column)]):
                facts.unlabelled.append(reader.line_num)
    except csv.Error as err:
        raise _fail(key, path, f"line {reader.line_num} cannot be parsed ({err}); fix its quoting.") from err
    if not facts.lines:
        split = key[len("data.") : -len("_file")] if key.startswith("data.") and key.endswith("_file") else "a"
        raise _fail(key, path, f"has a header but no data rows: the {split} split is empty; add rows.")
    return facts


def _json_facts(text: str, path: str, key: str, label_column: str | None) -> FileFacts:
    stripped = text.lstrip()
    if stripped.startswith("["):  # one JSON array of records
        try:
            records = json.loads(text)
        except json.JSONDecodeError as err:
            raise _fail(key, path, f"line {err.lineno} is not valid JSON ({err.msg}); fix that line.") from err
        if not records:
            raise _fail(key, path, "holds no records.")
        columns = list(records[0]) if isinstance(records[0], dict) else []
        return FileFacts(columns, [])
    facts = FileFacts()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            if number == 1 and stripped.startswith("{"):
                try:  # a single JSON document ({"data": [...]}) that spans lines: datasets reads it by field
                    json.loads(text)
                    return FileFacts()
                except json.JSONDecodeError:
                    pass
            raise _fail(key, path, f"line {number} is not valid JSON ({err.msg}); fix or remove that line.") from err
        if not isinstance(record, dict):
            raise _fail(key, path, f"line {number} is not a JSON object; each line holds one record {{...}}.")
        if not facts.columns:
            facts.columns = list(record)
        facts.lines.append(number)
        if label_column is not None and label_column in record and _missing(record[label_column]):
            facts.unlabelled.append(number)
    return facts


def _parquet_facts(path: str, key: str) -> FileFacts:
    import pyarrow.parquet as pq

    try:
        return FileFacts(list(pq.read_schema(path).names), [])
    except Exception as err:  # pyarrow raises ArrowInvalid and friends for files that are not parquet
        raise _fail(key, path, f"is not a readable parquet file ({type(err).__name__}).") from err


def check_same_columns(facts: dict[str, tuple[str, FileFacts | None]], label_column: str) -> None:
    """Files of one recipe must share their columns (datasets otherwise fails, naming the wrong file)."""
    known = {name: (path, f.columns) for name, (path, f) in facts.items() if f is not None and f.columns}
    with_label = [name for name, (_, columns) in known.items() if label_column in columns]
    for name, (path, columns) in known.items():
        if with_label and label_column not in columns:
            other = known[with_label[0]][0]
            raise DataError(
                f"data.{name}_file: {path} has no label column '{label_column}' (its columns: {columns}) but {other} "
                "has; add the column to it, or set data.label_column to a column both files have."
            )
    names = list(known)
    for name in names[1:]:
        first_path, first = known[names[0]]
        path, columns = known[name]
        if sorted(columns) != sorted(first):
            raise DataError(
                f"data.{name}_file: {path} has columns {columns} but {first_path} has {first}; "
                "give every split the same columns."
            )


# --- missing labels --------------------------------------------------------------------------------------------


def _missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value.strip().lower() in MISSING_LABELS


def _where(rows: list[int], lines: list[int] | None, total: int) -> str:
    shown = rows[:_SHOWN]
    more = f" and {len(rows) - _SHOWN} more" if len(rows) > _SHOWN else ""
    if lines is not None and len(lines) == total:
        return f"on line{'s' if len(rows) > 1 else ''} {', '.join(str(lines[i]) for i in shown)}{more} (file lines)"
    return f"in row{'s' if len(rows) > 1 else ''} {', '.join(str(i) for i in shown)}{more} (0-based row numbers)"


def unlabelled_rows(split: Dataset, column: str) -> list[int]:
    """Indices of rows whose label is empty, null or NaN (`null`/`nan` text counts as missing in a label column)."""
    if column not in split.column_names:
        return []
    feature = split.features[column]
    dtype = getattr(feature, "dtype", None)
    if dtype is None or (dtype.startswith(("int", "uint", "bool")) and not split.data.column(column).null_count):
        return []  # ClassLabel and integer columns without nulls have no missing cells
    return [i for i, value in enumerate(split[column]) if _missing(value)]


def _as_integers(split: Dataset, column: str) -> Dataset:
    """Labels read as text or floats only because of the missing cells: back to integers once those are gone."""
    dtype = getattr(split.features[column], "dtype", None)
    values = split.unique(column)
    if dtype in ("string", "large_string") and all(v.strip().lstrip("-").isdigit() for v in values):
        return split.map(lambda b: {column: [int(v) for v in b[column]]}, batched=True).cast_column(
            column, Value("int64")
        )
    if dtype in ("float32", "float64", "float16") and all(float(v).is_integer() for v in values):
        return split.cast_column(column, Value("int64"))
    return split


def unlabelled_error(origin: str, count: int, column: str, where: str, recipe: bool) -> DataError:
    fix = f"drop {'them' if count > 1 else 'it'} from the file" + (
        ", or set data.drop_unlabelled=true" if recipe else ""
    )
    return DataError(
        f"{origin} has {count} row{'s' if count > 1 else ''} without a label in '{column}' {where}; {fix}."
    )


def check_file_labels(path: str, facts: FileFacts | None, column: str, recipe: bool) -> None:
    """Missing label cells a file scan found, reported before datasets reads the file."""
    if facts is not None and facts.unlabelled:
        rows = list(range(len(facts.unlabelled)))
        where = _where(rows, facts.unlabelled, len(facts.unlabelled))
        raise unlabelled_error(path, len(facts.unlabelled), column, where, recipe)


def handle_unlabelled(
    splits: DatasetDict,
    column: str,
    drop: bool,
    sources: dict[str, tuple[str, FileFacts | None]] | None = None,
    recipe: bool = True,
) -> DatasetDict:
    """Rows without a label stop the run, naming where they are; with `drop` (data.drop_unlabelled) they are
    removed and counted per split. `recipe=False`: the data is not the recipe's (evaluate --file), so the fix
    offered is the file's alone."""
    sources = sources or {}
    for name in list(splits):
        split = splits[name]
        rows = unlabelled_rows(split, column)
        if not rows:
            continue
        path, facts = sources.get(name, (None, None))
        if not drop:
            where = _where(rows, facts.lines if facts else None, len(split))
            raise unlabelled_error(f"{path}" if path else f"the {name} split", len(rows), column, where, recipe)
        doomed = set(rows)
        kept = split.select([i for i in range(len(split)) if i not in doomed])
        splits[name] = _as_integers(kept, column)
        logger.warning(
            "Dropped %d %s rows without a label in '%s' (data.drop_unlabelled=true).", len(rows), name, column
        )
    return splits


def check_class_folders(folder: Path, key: str, need_two: bool) -> None:
    """`<dir>/<class>/<image>`, one level deep: nested folders would be read as other classes or mixed into one."""
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    for cls in classes:
        nested = sorted(p.name for p in cls.iterdir() if p.is_dir() and not p.name.startswith("."))
        if nested:
            raise DataError(
                f"{key}: class folder {cls} has sub-folders {nested[:3]}; put the images directly in "
                f"{folder}/<class>/, one folder level per class."
            )
    if need_two and len(classes) == 1:
        raise DataError(
            f"{key}: {folder} has a single class sub-folder ('{classes[0].name}'); classification needs at least "
            "two classes, one sub-folder each."
        )
