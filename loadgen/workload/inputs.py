"""Input data for operations: ``--inputs FILE.jsonl`` or ``.csv``.

Each operation receives the next record. ``cycle`` goes round the file
forever; ``once`` goes through it once and the run ends when it runs out.
Records are split among workers by index (worker i of W takes records
i, i + W, i + 2W, …), so in ``once`` mode no record is used twice without
any cross-process lock, and a replacement worker resumes its share where
the dead one stopped.
"""

from __future__ import annotations

import csv
import itertools
import json
import os

from ..errors import UsageError

MODES = ("cycle", "once")


def load_records(path):
    """All records of ``path`` (list). Raises :class:`UsageError` naming the file and line."""
    if not os.path.isfile(path):
        raise UsageError(f"{path!r}: no such file")
    ext = os.path.splitext(path)[1].lower()
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if ext == ".csv":
                reader = csv.DictReader(f)
                if not reader.fieldnames:
                    raise UsageError(f"{path!r}: empty CSV (no header line)")
                records = []
                for row in reader:
                    if None in row or any(v is None for v in row.values()):
                        raise UsageError(f"{path!r} line {reader.line_num}: expected "
                                         f"{len(reader.fieldnames)} fields")
                    records.append(row)
            elif ext in (".jsonl", ".ndjson", ".json"):
                records = []
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise UsageError(f"{path!r} line {n}: not JSON ({e.msg})") from None
            else:
                raise UsageError(f"{path!r}: expected a .jsonl or .csv file")
    except UnicodeDecodeError as e:
        raise UsageError(f"{path!r}: not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise UsageError(f"{path!r}: cannot read: {e.strerror}") from None
    if not records:
        raise UsageError(f"{path!r}: no records")
    return records


def feed(path, mode, index, stride, skip=0):
    """An iterator of this worker's records (``next`` is atomic under the GIL: slots share it)."""
    records = load_records(path)
    if mode == "once":
        mine = records[index::stride]
        return iter(mine[skip:])
    # cycle: every worker goes round all records, starting at its own offset
    start = (index + skip * stride) % len(records)
    return itertools.cycle(records[start:] + records[:start])
