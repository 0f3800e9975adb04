"""Reading a data table for the command line: a CSV file (read by Python's ``csv`` module, the
delimiter sniffed) or a 2-D numeric ``.npy`` array.

A CSV's first row is a header when it holds a cell that is not a number above a column of
numbers (or when every cell in it is text).  Empty cells and NA, N/A, NaN, null, ? are missing.
Columns of numbers are features; a column of text can only be the target.  The target is
``--target`` (a header name, or a column number counted from 1, negative from the end), else the
one column of text (text in every cell) if there is exactly one, else the last column.

Files are untrusted input: every problem is a ValueError naming the file, and for a cell its line
and column.
"""
import csv
import os
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Table", "read_table", "infer_task", "impute", "features", "MISSING"]

MISSING = frozenset({"", "na", "n/a", "nan", "null", "none", "?"})
SNIFF_BYTES = 1 << 16
DELIMITERS = ",;\t| "
MAX_CLASSES = 30  # an integer target with more distinct values than this is a quantity


@dataclass
class Table:
    """What :func:`read_table` read: ``X`` (n, d) float64 features (NaN where missing), ``y``
    (n,) the target column (float64, or str for text) or None, their names, and for each row
    the file line it came from."""

    X: np.ndarray
    y: object
    feature_names: list
    target_name: str = None
    lines: np.ndarray = field(default=None, repr=False)
    missing: list = field(default_factory=list)  # (line, column name) of missing feature cells
    notes: list = field(default_factory=list)


def _number(text):
    try:
        return float(text)
    except ValueError:
        return None


def _rows(path):
    """(the file's CSV rows as (line number, cells), the delimiter)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            sample = handle.read(SNIFF_BYTES)
            handle.seek(0)
            try:
                dialect = csv.Sniffer().sniff(sample, delimiters=DELIMITERS)
            except csv.Error:  # one column, or nothing the sniffer can decide on
                dialect = csv.excel
            reader = csv.reader(handle, dialect)
            rows = [(reader.line_num, [cell.strip() for cell in row])
                    for row in reader if any(cell.strip() for cell in row)]
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file (expected a CSV in UTF-8)") from None
    except csv.Error as error:
        raise ValueError(f"{path}: not a readable CSV file ({error})") from None
    return rows, dialect.delimiter


def _is_header(rows):
    first, rest = rows[0][1], rows[1:21]
    if not rest:
        return all(_number(cell) is None for cell in first)
    for j, cell in enumerate(first):
        below = [row[j] for _, row in rest if j < len(row) and row[j].lower() not in MISSING]
        if _number(cell) is None and below and all(_number(c) is not None for c in below):
            return True
    return all(_number(cell) is None and cell.lower() not in MISSING for cell in first)


def _target_index(target, names, label_columns, path):
    d = len(names)
    if target is None:
        return label_columns[0] if len(label_columns) == 1 else d - 1
    if target in names:
        return names.index(target)
    try:
        number = int(target)
    except ValueError:
        raise ValueError(f"--target {target!r}: {path} has no column of that name (its columns: "
                         f"{', '.join(names)})") from None
    if not (1 <= number <= d or -d <= number <= -1):
        raise ValueError(f"--target {number}: {path} has {d} columns (number them 1..{d}, or "
                         f"-1 for the last)")
    return number - 1 if number > 0 else d + number


def read_table(path, target=None, *, has_target=True, n_features=None):
    """Read ``path`` (CSV or .npy) into a :class:`Table`.

    ``target``: the target column, a header name or a column number (1-based; negative counts
    from the end); None: the one text column, else the last.  ``has_target=False``: every column
    is a feature (``y`` None), unless ``target`` names one to leave out, or the file has one
    column more than ``n_features`` (the default target is left out then).  Raises ValueError
    naming the file (and line and column) for anything it cannot read as a table.
    """
    if not os.path.isfile(path):
        raise ValueError(f"{path}: no such file" if not os.path.exists(path) else
                         f"{path}: not a file")
    if path.lower().endswith(".npy"):
        return _read_npy(path, target, has_target)
    rows, delimiter = _rows(path)
    if not rows:
        raise ValueError(f"{path}: no data")
    header = _is_header(rows)
    width = len(rows[0][1])
    names = rows[0][1] if header else [f"column {j + 1}" for j in range(width)]
    names = [name or f"column {j + 1}" for j, name in enumerate(names)]
    body = rows[1:] if header else rows
    if not body:
        raise ValueError(f"{path}: a header but no data rows")
    for line, row in body:
        if len(row) != width:
            raise ValueError(f"{path}, line {line}: {len(row)} cells where the "
                             f"{'header' if header else 'first row'} has {width} (delimiter "
                             f"{delimiter!r})")
    cells = [row for _, row in body]
    lines = np.array([line for line, _ in body])
    columns, text_columns, label_columns = [], [], []
    for j in range(width):
        values = np.full(len(cells), np.nan)
        texts = 0
        for i, row in enumerate(cells):
            cell = row[j]
            if cell.lower() not in MISSING:
                number = _number(cell)
                texts += number is None
                values[i] = np.nan if number is None else number
        columns.append(None if texts else values)
        if texts:
            text_columns.append(j)
            if texts == np.count_nonzero([row[j].lower() not in MISSING for row in cells]):
                label_columns.append(j)  # text throughout: labels, not a typo among numbers
    if not has_target and target is None and (n_features is None or width != n_features + 1):
        t = None
    else:
        t = _target_index(target, names, label_columns, path)
    for j in text_columns:
        if j != t:
            line = next(lines[i] for i, row in enumerate(cells)
                        if row[j].lower() not in MISSING and _number(row[j]) is None)
            cell = next(row[j] for row in cells if row[j].lower() not in MISSING
                        and _number(row[j]) is None)
            raise ValueError(f"{path}, line {line}, column {names[j]!r}: {cell!r} is not a number "
                             "(features must be numbers; if this column is the target, name it "
                             "with --target)")
    features = [j for j in range(width) if j != t]
    if not features:
        raise ValueError(f"{path}: no feature columns besides the target")
    X = np.column_stack([columns[j] for j in features])
    missing = [(int(lines[i]), names[features[j]]) for i, j in zip(*np.nonzero(np.isnan(X)))]
    table = Table(X, None, [names[j] for j in features], lines=lines, missing=missing)
    if delimiter != ",":
        table.notes.append(f"delimiter {delimiter!r}")
    if t is not None and not has_target:
        table.notes.append(f"column {names[t]!r} left out")
    if t is not None and has_target:
        raw = [row[t] for row in cells]
        absent = [int(lines[i]) for i, cell in enumerate(raw) if cell.lower() in MISSING]
        if absent:
            raise ValueError(f"{path}, line {absent[0]}, column {names[t]!r}: the target is "
                             f"missing ({len(absent)} rows without a target)")
        table.y = np.array(raw) if columns[t] is None else columns[t]
        table.target_name = names[t]
    return table


def _read_npy(path, target, has_target):
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise ValueError(f"{path}: not a readable .npy array ({error})") from None
    if array.ndim != 2 or array.dtype.kind not in "fiub" or array.shape[0] < 1:
        raise ValueError(f"{path}: expected a 2-D array of numbers, got shape {array.shape} of "
                         f"dtype {array.dtype}")
    array = array.astype(np.float64)
    names = [f"column {j + 1}" for j in range(array.shape[1])]
    lines = np.arange(1, len(array) + 1)
    if not has_target and target is None:
        return Table(array, None, names, lines=lines)
    t = _target_index(target, names, [], path)
    features = [j for j in range(array.shape[1]) if j != t]
    if not features:
        raise ValueError(f"{path}: no feature columns besides the target")
    if np.isnan(array[:, t]).any():
        raise ValueError(f"{path}: the target column has missing values (NaN)")
    X = array[:, features]
    missing = [(int(i) + 1, names[features[j]]) for i, j in zip(*np.nonzero(np.isnan(X)))]
    return Table(X, array[:, t] if has_target else None, [names[j] for j in features],
                 names[t] if has_target else None, lines, missing)


def infer_task(y):
    """'classify' for text labels or a few integer values, else 'regress' (a float target)."""
    if y.dtype.kind not in "fiub":
        return "classify"
    integral = bool(np.all(y == np.round(y)))
    return "classify" if integral and len(np.unique(y)) <= MAX_CLASSES else "regress"


def impute(X, how):
    """A copy of X with each column's NaN replaced by the column's mean or median (``how``)."""
    fill = (np.nanmean if how == "mean" else np.nanmedian)(X, axis=0)
    if np.isnan(fill).any():
        raise ValueError(f"--impute {how}: a feature column has no values at all")
    return np.where(np.isnan(X), fill, X)


def features(table, path, how):
    """The table's features with its missing values filled in (``how``: 'mean' or 'median'), or,
    without ``how``, a ValueError naming the file's line and column of the first missing value."""
    if not table.missing:
        return table.X
    if how is None:
        line, column = table.missing[0]
        raise ValueError(f"{path}, line {line}, column {column!r}: missing value "
                         f"({len(table.missing)} missing in all; --impute mean or median fills "
                         "them in)")
    return impute(table.X, how)
