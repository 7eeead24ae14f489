"""Reading a local data file into (question, answer) rows: the part of data.load_examples that
parses .jsonl / .json / .csv itself and .parquet through datasets' loader, then picks the
question and answer columns and turns each cell into text.

* JSON and CSV are read with every number kept as the text the file writes, so that
  `9007199254740993` or `1e3` reaches the grader exactly, never rounded through a float.
* `read_rows(path)`: (columns, rows); a file that is not UTF-8, empty, or not valid JSON / CSV
  is one ValueError naming the line to fix.
* `question_answers(...)`: the (question, answer, row) triples of rows that hold both; a
  dotted key reads a nested field ("reward_model.ground_truth" in verl-style parquet files),
  a chat-message list gives its last user turn, any other dict or list is refused.
"""

import csv
import io
import json
import logging
import math
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger("data")   # its messages read as data.load_examples's

QUESTION_KEYS = ("question", "problem", "prompt", "input", "query")  # tried in order
ANSWER_KEYS = ("answer", "solution", "final_answer", "target", "ground_truth")
LOCAL_FORMATS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}  # datasets builders


def _check_text_file(path: Path) -> str:
    """The text of a data file, which must be UTF-8 and not blank; say which line is not UTF-8."""
    raw = path.read_bytes()
    for number, line in enumerate(raw.splitlines(), 1):
        try:
            line.decode("utf-8")
        except UnicodeDecodeError as error:
            raise ValueError(f"Line {number} of {path} is not valid UTF-8 (byte {line[error.start]:#x} "
                             f"at column {error.start + 1}); save the file as UTF-8.") from None
    if not raw.strip():
        raise ValueError(f"Data file {path} is empty; give a file with at least one row.")
    return raw.decode("utf-8-sig")


def _json_value(text: str):
    """JSON with every number kept as the text it is written as (`9007199254740993`, `1e3`), never
    a float: an answer must reach the grader exactly as the file writes it."""
    return json.loads(text, parse_float=str, parse_int=str)


def _read_json(path: Path, text: str) -> list:
    """The rows of a .json file (a list of objects, an object of columns, or JSON lines) or a
    .jsonl file (JSON lines); a line that is not JSON is named."""
    if path.suffix.lower() == ".json":
        try:
            whole = _json_value(text)
        except json.JSONDecodeError:
            whole = None                       # JSON lines in a .json file, as datasets reads them
        if isinstance(whole, dict) and all(isinstance(v, list) for v in whole.values()):
            return [dict(zip(whole, values, strict=True)) for values in zip(*whole.values(), strict=False)]
        if whole is not None:
            return whole if isinstance(whole, list) else [whole]
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                rows.append(_json_value(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"Line {number} of {path} is not valid JSON ({error.msg} at column "
                                 f"{error.colno}); fix the line or remove it.") from None
    return rows


def _read_csv(path: Path, text: str) -> list[dict]:
    """The rows of a .csv file under its header, every cell the text it holds (an empty cell is
    missing); a row with more cells than the header is named."""
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, [])
        rows = []
        for values in reader:
            if len(values) > len(header):
                raise ValueError(f"Line {reader.line_num} of {path} has {len(values)} cells but the "
                                 f"header names {len(header)} columns; quote cells that hold commas.")
            if any(values):
                rows.append(dict(zip(header, values, strict=False)))
    except csv.Error as error:
        raise ValueError(f"Line {reader.line_num} of {path} is not valid CSV ({error}); fix the "
                         f"line or remove it.") from None
    return rows


def read_rows(path: Path) -> tuple[list[str], list]:
    """(columns, rows) of a local data file. JSON and CSV are read here, every number as its text;
    parquet, whose columns are typed, by datasets' loader."""
    builder = LOCAL_FORMATS.get(path.suffix.lower())
    if builder is None:
        raise ValueError(f"Cannot read {path}: data files must end in {', '.join(LOCAL_FORMATS)}.")
    if not path.is_file():
        raise ValueError(f"Data file {path} does not exist; check the path passed as the data set.")
    if builder == "parquet":
        rows = _load_parquet(path)
        return list(rows.column_names), list(rows)
    text = _check_text_file(path)
    rows = _read_json(path, text) if builder == "json" else _read_csv(path, text)
    if not rows:
        raise ValueError(f"Data file {path} holds no rows; give a file with at least one row.")
    for number, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise ValueError(f"Row {number} of {path} is a {type(row).__name__}, not an object with "
                             f"a question and an answer; give one object per row.")
    return list(dict.fromkeys(key for row in rows for key in row)), rows


def _load_parquet(path: Path):
    from datasets import load_dataset
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    quiet = are_progress_bars_disabled()
    disable_progress_bars()   # its "Generating train split" bar would precede any error message
    try:
        return load_dataset("parquet", data_files=str(path), split="train")
    except Exception as error:
        raise ValueError(f"Could not read {path} as {path.suffix} ({type(error).__name__}: {error}); "
                         f"check that the file is valid {path.suffix[1:]}.") from error
    finally:
        if not quiet:
            enable_progress_bars()


def _pick_column(columns: list[str], key: str | None, defaults: tuple[str, ...], kind: str, source: str,
                 flag: str | None) -> str:
    """The column to read: `key` if given (its first dotted part must exist), else the first default present."""
    advice = f"Pass {flag} with one of them." if flag else "Correct its entry in data.KNOWN."
    if key is not None:
        if key.split(".")[0] in columns:
            return key
        raise ValueError(f"{source} has no {kind} column {key!r}; its columns are {columns}. {advice}")
    for candidate in defaults:
        if candidate in columns:
            return candidate
    raise ValueError(f"{source} has none of the usual {kind} columns {list(defaults)}; its columns are "
                     f"{columns}. {advice}")


def _field(row: dict, key: str):
    """row[key], following dots into nested fields; None where a level is missing."""
    value = row
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _as_text(value, source: str, number: int, column: str, flag: str | None) -> str | None:
    """A cell as a stripped string; None for missing / empty / NaN. Integral floats (a parquet
    float column: JSON and CSV numbers arrive as their text) lose their `.0`, so 27.0 is the
    answer 27; a chat-message list gives its last user turn. Any other dict or list is refused,
    naming the file, the row (`number`, from 1) and the column: str() of it would be graded as
    the answer text."""
    if isinstance(value, list) and value and all(isinstance(m, dict) and "content" in m for m in value):
        user_turns = [m["content"] for m in value if m.get("role", "user") == "user"]
        value = user_turns[-1] if user_turns else None
    if isinstance(value, (dict, list)):
        shown = json.dumps(value, ensure_ascii=False, default=str)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        advice = "give one string or number per cell"
        if isinstance(value, dict) and value and flag:
            advice += f", or name one of its fields with {flag} {column}.{next(iter(value))}"
        raise ValueError(f"Row {number} of {source}, column {column!r}, holds a {type(value).__name__} "
                         f"({shown}) where text is expected; {advice}.")
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None


def question_answers(columns: list[str], rows, question_key: str | None, answer_key: str | None,
                     source: str, key_flags: tuple[str, str] | None,
                     question_transform: Callable[[str], str] | None = None,
                     answer_transform: Callable[[str], str] | None = None) -> list[tuple[str, str, int]]:
    """(question, answer, row number from 1) of every row that has both, read from the columns
    `question_key` / `answer_key` (else the first of QUESTION_KEYS / ANSWER_KEYS present), each
    transformed if given; rows without one are skipped with one logged warning giving their
    count. key_flags: the command's flags that set the two keys, named in error messages."""
    question_flag, answer_flag = key_flags or (None, None)
    question_column = _pick_column(columns, question_key, QUESTION_KEYS, "question", source, question_flag)
    answer_column = _pick_column(columns, answer_key, ANSWER_KEYS, "answer", source, answer_flag)
    examples, skipped = [], 0
    for number, row in enumerate(rows, 1):
        question = _as_text(_field(row, question_column), source, number, question_column, question_flag)
        answer = _as_text(_field(row, answer_column), source, number, answer_column, answer_flag)
        if question is not None and question_transform is not None:
            question = question_transform(question).strip() or None
        if answer is not None and answer_transform is not None:
            answer = answer_transform(answer).strip() or None
        if question is None or answer is None:
            skipped += 1
            continue
        examples.append((question, answer, number))
    if skipped:
        logger.warning("%s: skipped %d of %d rows without a question or an answer", source, skipped, len(rows))
    if not examples:
        advice = (f"check the columns or pass {question_flag} / {answer_flag}" if key_flags
                  else "correct its entry in data.KNOWN")
        raise ValueError(f"{source} has no row with both a question ({question_column!r}) and an answer "
                         f"({answer_column!r}); {advice}.")
    return examples
