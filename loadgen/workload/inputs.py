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
import io
import itertools
import os

from ..errors import UsageError

MODES = ("cycle", "once")


def load_records(path):
    """All records of ``path`` (list). Raises :class:`UsageError` naming the file and line.

    The file is read with :func:`~loadgen.streams.read_bounded`: a regular file of at most
    :data:`~loadgen.streams.MAX_PLAN_BYTES` (64 MiB; a FIFO or a device is refused unread).
    """
    from ..streams import MAX_PLAN_BYTES, parse_json, read_bounded

    ext = os.path.splitext(path)[1].lower()
    if ext not in (".csv", ".jsonl", ".ndjson", ".json"):
        if not os.path.lexists(path):
            raise UsageError(f"{path!r}: no such file")
        raise UsageError(f"{path!r}: expected a .jsonl or .csv file")
    if not os.path.lexists(path):
        raise UsageError(f"{path!r}: no such file")
    raw = read_bounded(path, MAX_PLAN_BYTES, "--inputs file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UsageError(f"{path!r}: not UTF-8 text ({e.reason})") from None
    del raw
    f = io.StringIO(text, newline="")  # lines split as open(..., newline="") splits them
    if ext == ".csv":
        reader = csv.DictReader(f)
        records = []
        try:
            if not reader.fieldnames:
                raise UsageError(f"{path!r}: empty CSV (no header line)")
            for row in reader:
                if None in row or any(v is None for v in row.values()):
                    raise UsageError(f"{path!r} line {reader.line_num}: expected "
                                     f"{len(reader.fieldnames)} fields")
                records.append(row)
        except csv.Error as e:
            raise UsageError(f"{path!r} line {reader.line_num}: not CSV ({e})") from None
    else:
        records = []
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            records.append(parse_json(line, f"{path!r} line {n}", strict=False))  # UsageError naming the line
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
