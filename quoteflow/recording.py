"""Recording an SSE feed to Parquet, and reading a recording back (docs/recording.md).

``quoteflow record URL --out session.parquet`` connects with the project's own client
(:func:`quoteflow.client.stream`: reconnects, resumes with ``Last-Event-ID``) and writes
every event it receives, one row each, to Parquet files written with ``pyarrow``:

======================  ========  ===================================================
column                  type      what
======================  ========  ===================================================
``id``                  string    the event id in force (WHATWG ``lastEventId``); null
                                  when the feed sends none
``event``               string    event type (``message`` when the feed names none)
``data``                string    the data text exactly as received (the truth)
``received_ns``         int64     Unix nanoseconds when the recorder received it
``payload.<key>``       scalar    one column per top-level scalar field of a JSON
                                  object payload (nested values stay in ``data`` only)
======================  ========  ===================================================

Rolling and crash safety. The recording is a series of files ``<stem>-00000.parquet``,
``<stem>-00001.parquet``, ... next to ``--out``. A file is written as
``<name>.partial`` and renamed to its final name only after its footer is written and
flushed to disk (``fsync``), when it reaches ``roll_bytes`` or ``roll_seconds``, or when
the recorder stops (SIGINT/SIGTERM, ``--duration``, end of feed). A rename is atomic,
so every ``*.parquet`` file of a recording is complete and readable, whatever happens
to the process: a recorder killed with SIGKILL (or a power cut) loses only the rows of
the file it was writing (buffered in memory, or in a ``.partial`` file that has no
footer and is not readable), i.e. at most the last roll interval.

The payload columns are a convenience view, inferred per file: the quoteflow tick and
bar fields have fixed types (:data:`KNOWN_FIELDS`), any other key takes the type of its
first values in the file, and a later value that does not fit (or a key first seen
later in the file, or beyond :data:`MAX_PAYLOAD_COLUMNS` keys) is null there; ``data``
always holds the full payload.

:func:`read_recording` reads a recording back (one file, a glob, several files, or the
``--out`` name of a rolled recording) as one :class:`pyarrow.Table` in file order.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob as _glob
import json
import math
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from quoteflow.errors import ConfigError, DataError

if TYPE_CHECKING:
    import pyarrow as pa

__all__ = [
    "BASE_COLUMNS",
    "KNOWN_FIELDS",
    "MAX_PAYLOAD_COLUMNS",
    "PAYLOAD_PREFIX",
    "Recorder",
    "RecordingStats",
    "is_recording",
    "read_recording",
    "record",
    "recording_files",
]

#: The columns every recording file has, in order.
BASE_COLUMNS: tuple[str, ...] = ("id", "event", "data", "received_ns")
#: Prefix of the flattened payload columns (``payload.price``).
PAYLOAD_PREFIX = "payload."
#: Types of the payload fields quoteflow itself sends (wire.payload.TICK_FIELDS,
#: BAR_FIELDS, ``seq``, and the daily replay's ``date``), fixed so that every file of a
#: quoteflow recording has the same columns.
KNOWN_FIELDS: dict[str, str] = {
    "symbol": "string",
    "price": "float64",
    "bid": "float64",
    "ask": "float64",
    "size": "int64",
    "ts": "string",
    "ts_ns": "int64",
    "open": "float64",
    "high": "float64",
    "low": "float64",
    "close": "float64",
    "volume": "int64",
    "start": "string",
    "end": "string",
    "date": "string",
    "seq": "int64",
}
#: Most payload columns per file: a feed whose keys vary (ids or times as keys) must
#: not turn into thousands of columns; further keys stay in ``data`` only.
MAX_PAYLOAD_COLUMNS = 256
#: Rows buffered before they are written as one row group.
ROW_GROUP_ROWS = 10_000
_INT64 = (-(2**63), 2**63 - 1)


def _pyarrow() -> Any:
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError as exc:  # pragma: no cover - pyarrow is a base dependency
        raise ConfigError(f"recordings need pyarrow ({exc}); pip install 'pyarrow>=15'") from None
    return pyarrow


def _scalar_kind(value: Any) -> str | None:
    """The column type a JSON scalar would go to (None: not a scalar, not flattened)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64" if _INT64[0] <= value <= _INT64[1] else "float64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    return None


def _fits(kind: str, value: Any) -> Any:
    """``value`` as a cell of a ``kind`` column, or None when it does not fit."""
    if value is None:
        return None
    if kind == "string":
        return value if isinstance(value, str) else None
    if kind == "bool":
        return value if isinstance(value, bool) else None
    if isinstance(value, bool):
        return None
    if kind == "int64":
        return value if isinstance(value, int) and _INT64[0] <= value <= _INT64[1] else None
    if kind == "float64" and isinstance(value, int | float):
        f = float(value)
        return f if math.isfinite(f) else None
    return None


def _flatten(data: str) -> dict[str, Any] | None:
    """The top-level scalar fields of a JSON object payload; None for anything else."""
    if not data.startswith("{"):
        return None  # cheap test first: most non-JSON feeds never reach json.loads
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    return {k: v for k, v in obj.items() if _scalar_kind(v) is not None}


@dataclass
class RecordingStats:
    """What a recorder has done so far.

    Attributes
    ----------
    events : int
        Rows written or buffered.
    files : list of Path
        Finished (renamed, readable) files, in order.
    current : Path or None
        The ``.partial`` file being written, if any.
    """

    events: int = 0
    files: list[Path] = field(default_factory=list)
    current: Path | None = None


class Recorder:
    """Writes events as rows of rolling, crash-safe Parquet files (see the module doc).

    Parameters
    ----------
    out : str or Path
        The recording's name, e.g. ``session.parquet``: files are ``session-00000.parquet``,
        ``session-00001.parquet``, ... in the same folder (created if missing).
    roll_bytes : int
        Start a new file once the current one holds about this many bytes of written
        row groups.
    roll_seconds : float
        Start a new file once the current one is this old (seconds); this bounds what a
        SIGKILL can lose.
    row_group_rows : int
        Rows buffered in memory before they are written as a row group.
    clock : callable
        Monotonic seconds (injectable for tests).

    Raises
    ------
    ConfigError
        ``out`` does not end in ``.parquet``, a bound is not positive, or files of a
        recording of that name already exist (never overwritten).
    """

    def __init__(
        self,
        out: str | Path,
        *,
        roll_bytes: int = 64 << 20,
        roll_seconds: float = 60.0,
        row_group_rows: int = ROW_GROUP_ROWS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pa = _pyarrow()
        path = Path(out)
        if path.suffix != ".parquet":
            raise ConfigError(f"--out {out}: name the recording NAME.parquet")
        if not roll_bytes > 0:
            raise ConfigError(f"roll size must be > 0 bytes, got {roll_bytes}")
        if not (roll_seconds > 0 and math.isfinite(roll_seconds)):
            raise ConfigError(f"roll interval must be > 0 seconds, got {roll_seconds}")
        if row_group_rows < 1:
            raise ConfigError(f"row group size must be >= 1 row, got {row_group_rows}")
        existing = _rolled(path)
        if path.exists() or existing:
            first = path if path.exists() else existing[0]
            raise ConfigError(
                f"--out {out}: {first} already exists; choose another name (recordings "
                "are never overwritten)"
            )
        path.parent.mkdir(parents=True, exist_ok=True)
        self.out = path
        self.roll_bytes = int(roll_bytes)
        self.roll_seconds = float(roll_seconds)
        self.row_group_rows = int(row_group_rows)
        self._clock = clock
        self.stats = RecordingStats()
        self._rows: list[tuple[str | None, str, str, int, dict[str, Any] | None]] = []
        self._writer: Any = None
        self._schema: Any = None
        self._kinds: dict[str, str] = {}
        self._opened_at = 0.0
        self._bytes = 0
        self._index = 0
        self._closed = False

    # -- writing -----------------------------------------------------------------------

    def _name(self, index: int) -> Path:
        return self.out.with_name(f"{self.out.stem}-{index:05d}{self.out.suffix}")

    def add(self, event: str, data: str, id: str | None, received_ns: int) -> None:
        """Record one event (buffered; written with the next row group).

        Parameters
        ----------
        event : str
            The event type.
        data : str
            The data text as received.
        id : str or None
            The event id in force.
        received_ns : int
            Unix nanoseconds of receipt.
        """
        if self._closed:
            raise RuntimeError("recorder is closed")
        if not self._opened_at:
            self._opened_at = self._clock()  # the file's age counts from its first row
        self._rows.append((id, event, data, received_ns, _flatten(data)))
        self.stats.events += 1
        if len(self._rows) >= self.row_group_rows:
            self.flush()
        self.maybe_roll()

    def maybe_roll(self) -> None:
        """Finish the current file if it is due (by age or size); called after each add
        and by :func:`record`'s timer, so an idle feed still rolls on time."""
        if self._writer is None and not self._rows:
            return
        age = self._clock() - self._opened_at
        if age >= self.roll_seconds or self._bytes >= self.roll_bytes:
            self.roll()

    def _open(self) -> None:
        pa = self._pa
        kinds: dict[str, str] = {}
        for *_, flat in self._rows:
            for key, value in (flat or {}).items():
                if key not in kinds and len(kinds) >= MAX_PAYLOAD_COLUMNS:
                    continue
                if key not in kinds:
                    kinds[key] = KNOWN_FIELDS.get(key) or _scalar_kind(value) or "string"
                elif kinds[key] == "int64" and key not in KNOWN_FIELDS and isinstance(value, float):
                    kinds[key] = "float64"  # 1 then 1.5: a float column
        types = {
            "string": pa.string(),
            "int64": pa.int64(),
            "float64": pa.float64(),
            "bool": pa.bool_(),
        }
        fields = [
            pa.field("id", pa.string()),
            pa.field("event", pa.string(), nullable=False),
            pa.field("data", pa.string(), nullable=False),
            pa.field("received_ns", pa.int64(), nullable=False),
        ]
        fields += [pa.field(PAYLOAD_PREFIX + k, types[t]) for k, t in kinds.items()]
        self._kinds = kinds
        self._schema = pa.schema(fields)
        final = self._name(self._index)
        partial = final.with_name(final.name + ".partial")
        self._writer = pa.parquet.ParquetWriter(str(partial), self._schema, compression="zstd")
        self.stats.current = partial

    def flush(self) -> None:
        """Write the buffered rows as one row group of the current file."""
        if not self._rows:
            return
        if self._writer is None:
            self._open()
        rows, self._rows = self._rows, []
        columns: dict[str, list[Any]] = {
            "id": [r[0] for r in rows],
            "event": [r[1] for r in rows],
            "data": [r[2] for r in rows],
            "received_ns": [r[3] for r in rows],
        }
        for key, kind in self._kinds.items():
            columns[PAYLOAD_PREFIX + key] = [_fits(kind, (r[4] or {}).get(key)) for r in rows]
        table = self._pa.Table.from_pydict(columns, schema=self._schema)
        self._writer.write_table(table)
        # The file's size only changes here: measured once per row group, not per event.
        current = self.stats.current
        self._bytes = current.stat().st_size if current is not None else 0

    def roll(self) -> None:
        """Finish the current file (footer, fsync, atomic rename); the next add starts a
        new one."""
        self.flush()
        writer, partial = self._writer, self.stats.current
        if writer is None or partial is None:
            return
        writer.close()
        self._writer = None
        self.stats.current = None
        self._opened_at = 0.0
        self._bytes = 0
        final = partial.with_name(partial.name.removesuffix(".partial"))
        # The footer must be on disk before the name says the file is complete.
        with open(partial, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(partial, final)
        _fsync_dir(final.parent)
        self.stats.files.append(final)
        self._index += 1

    def close(self) -> None:
        """Finish the current file (idempotent)."""
        if self._closed:
            return
        self.roll()
        self._closed = True


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable (POSIX: the directory entry is data of the directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


async def record(
    url: str,
    recorder: Recorder,
    *,
    duration: float | None = None,
    max_events: int | None = None,
    stop: asyncio.Event | None = None,
    clock_ns: Callable[[], int] = time.time_ns,
    **client_options: Any,
) -> RecordingStats:
    """Record the SSE feed at ``url`` into ``recorder`` until stopped; close it.

    Parameters
    ----------
    url : str
        An SSE URL (``http://host:8080/stream`` or any other feed).
    recorder : Recorder
        Where rows go; closed (last file finished) on return, also on error.
    duration : float, optional
        Stop after this many seconds.
    max_events : int, optional
        Stop after this many events.
    stop : asyncio.Event, optional
        Stop when set (signal handlers set it).
    clock_ns : callable
        Unix nanoseconds for ``received_ns``.
    **client_options
        Passed to :func:`quoteflow.client.stream` (``token``, ``symbols``, ...).

    Returns
    -------
    RecordingStats
    """
    from quoteflow.client import stream

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    timer = loop.call_later(duration, stop.set) if duration is not None else None

    async def consume() -> None:
        async with stream(url, **client_options) as events:
            async for ev in events:
                recorder.add(ev.event, ev.data, ev.id, clock_ns())
                if max_events is not None and recorder.stats.events >= max_events:
                    return

    async def rolls() -> None:
        # An idle feed must still finish its file on time (the crash-safety bound).
        while True:
            await asyncio.sleep(min(recorder.roll_seconds / 4, 1.0))
            recorder.maybe_roll()

    consumer = loop.create_task(consume())
    roller = loop.create_task(rolls())
    stopper = loop.create_task(stop.wait())
    try:
        await asyncio.wait({consumer, stopper}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (consumer, roller, stopper):
            task.cancel()
        for task in (roller, stopper):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if timer is not None:
            timer.cancel()
        try:
            if consumer.done() and not consumer.cancelled():
                consumer.result()  # a StreamError (401, 404...) surfaces here
            else:
                with contextlib.suppress(asyncio.CancelledError):
                    await consumer
        finally:
            recorder.close()
    return recorder.stats


# ----------------------------------------------------------------------------- reading


def _rolled(path: Path) -> list[Path]:
    """The finished files of a rolled recording named ``path``, in order."""
    pattern = f"{_glob.escape(path.stem)}-[0-9][0-9][0-9][0-9][0-9]*{_glob.escape(path.suffix)}"
    return sorted(p for p in path.parent.glob(pattern) if p.is_file())


def recording_files(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """The files a recording spec names, in replay order.

    Parameters
    ----------
    spec : str, Path or sequence of them
        A ``.parquet`` file; the ``--out`` name of a rolled recording
        (``session.parquet`` -> ``session-00000.parquet``, ...); a glob
        (``day-*.parquet``, sorted by name); or several of these (comma-separated in a
        string), played one after the other.

    Raises
    ------
    ConfigError
        A part matches no file.
    """
    parts: Iterable[str | Path]
    parts = [p for p in str(spec).split(",") if p.strip()] if isinstance(spec, str | Path) else spec
    out: list[Path] = []
    for part in parts:
        text = str(part).strip()
        path = Path(text)
        if _glob.has_magic(text):
            found = sorted(Path(p) for p in _glob.glob(text) if Path(p).is_file())
        elif path.is_file():
            found = [path]
        else:
            found = _rolled(path)
        if not found:
            raise ConfigError(
                f"replay: no recording {text} (no such file, no {path.stem}-NNNNN"
                f"{path.suffix} files, no match)"
            )
        out.extend(found)
    return out


def is_recording(spec: str) -> bool:
    """True when ``--replay spec`` names Parquet recordings (by suffix) rather than
    daily history (a ticker or a CSV)."""
    return any(p.strip().lower().endswith(".parquet") for p in spec.split(","))


def read_recording(spec: str | Path | Sequence[str | Path]) -> pa.Table:
    """Read a recording (see :func:`recording_files`) as one table, in file order.

    Only :data:`BASE_COLUMNS` and ``payload.symbol`` are kept (the payload columns of
    different files may differ); ``payload.symbol`` is null where a row has none.

    Raises
    ------
    ConfigError
        No such recording.
    DataError
        A file is not a readable recording (names the file and what is missing).
    """
    pa = _pyarrow()
    import pyarrow.parquet as pq

    tables = []
    for path in recording_files(spec):
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowInvalid) as exc:
            raise DataError(f"replay: {path} is not a readable Parquet file: {exc}") from None
        missing = [c for c in BASE_COLUMNS if c not in table.column_names]
        if missing:
            raise DataError(
                f"replay: {path} is not a quoteflow recording: no column(s) {', '.join(missing)}"
            )
        symbol_col = PAYLOAD_PREFIX + "symbol"
        if symbol_col in table.column_names and pa.types.is_string(
            table.schema.field(symbol_col).type
        ):
            symbol = table.column(symbol_col)
        else:
            symbol = pa.nulls(table.num_rows, pa.string())
        seq_col = PAYLOAD_PREFIX + "seq"
        seq = (
            table.column(seq_col).cast(pa.int64())
            if seq_col in table.column_names
            and pa.types.is_integer(table.schema.field(seq_col).type)
            else pa.nulls(table.num_rows, pa.int64())
        )
        tables.append(
            pa.table(
                {
                    "id": table.column("id").cast(pa.string()),
                    "event": table.column("event").cast(pa.string()),
                    "data": table.column("data").cast(pa.string()),
                    "received_ns": table.column("received_ns").cast(pa.int64()),
                    "symbol": symbol,
                    "seq": seq,
                }
            )
        )
    return pa.concat_tables(tables)
