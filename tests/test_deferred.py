"""obskit._deferred: work and lines handed over by hot paths, run and written in batches."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from obskit import _deferred
from obskit._logging import _Writer


class Made:
    """A work item: records that it ran, returns a line (or None, or raises)."""

    ran: list[str] = []

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, increments: dict[Any, float] | None) -> str | None:
        Made.ran.append(self.name)
        if self.name == "broken":
            raise RuntimeError("bookkeeping bug")
        return None if self.name == "silent" else f"made {self.name}"


@pytest.fixture
def to_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[_Writer, Path]]:
    """A file sink (batched), with only flush() taking batches."""
    monkeypatch.setattr(_deferred, "_paused", True)
    Made.ran = []
    path = tmp_path / "out.log"
    with path.open("w") as stream:
        writer = _Writer(stream)
        _deferred.set_sink(writer)
        try:
            yield writer, path
        finally:
            _deferred.set_sink(None)


def test_work_runs_with_its_batch_in_order_and_its_errors_stay_inside(
        to_file: tuple[_Writer, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBSKIT_RAISE_INTERNAL_ERRORS", "0")
    writer, path = to_file
    writer.line("first")
    for name in ("a", "silent", "broken", "b"):
        _deferred.defer(Made(name))
    writer.line("last")
    assert Made.ran == [] and path.read_text() == ""  # a file: all of it waits for the batch
    _deferred.flush()
    assert Made.ran == ["a", "silent", "broken", "b"]
    assert path.read_text() == "first\nmade a\nmade b\nlast\n"


class Gauge:
    """A metric child: records each inc() it is given."""

    def __init__(self) -> None:
        self.incs: list[float] = []

    def inc(self, amount: float) -> None:
        self.incs.append(amount)


class Done:
    """A finished request's work item: takes its gauge down by one, summed over its batch."""

    def __init__(self, gauge: Gauge) -> None:
        self.gauge = gauge

    def run(self, increments: dict[Any, float] | None) -> str | None:
        if increments is None:
            self.gauge.inc(-1)
        else:
            increments[self.gauge] = increments.get(self.gauge, 0) - 1
        return None


def test_a_batch_applies_the_increments_its_items_summed_once_per_child(
        to_file: tuple[_Writer, Path]) -> None:
    get, post = Gauge(), Gauge()
    for gauge in (get, post, get, get):
        _deferred.defer(Done(gauge))
    assert get.incs == post.incs == []  # they wait for the batch, as the lines do
    _deferred.flush()
    assert (get.incs, post.incs) == ([-3], [-1])
    _deferred.run_now(Done(get))  # alone: the item applies its own
    assert get.incs == [-3, -1]


def test_where_lines_go_out_one_at_a_time_work_runs_at_once_after_what_waits(
        to_file: tuple[_Writer, Path]) -> None:
    writer, path = to_file
    writer.line("queued")
    captured = io.StringIO()  # not a file: lines and work at once
    _deferred.set_sink(_Writer(captured))
    assert path.read_text() == "queued\n"  # the previous sink got what was waiting for it
    _deferred.defer(Made("now"))
    assert captured.getvalue() == "made now\n"
    _deferred.set_sink(None)  # before init(): work still runs, its line has nowhere to go
    _deferred.defer(Made("unseen"))
    assert Made.ran == ["now", "unseen"]


def test_a_closed_writer_writes_at_once_instead_of_queueing(
        to_file: tuple[_Writer, Path]) -> None:
    writer, path = to_file
    writer.line("queued")
    assert path.read_text() == ""  # a file: batched
    writer.close()  # takes the batch; nothing queues after it
    assert path.read_text() == "queued\n"
    writer.line("late")  # e.g. from an atexit hook after shutdown: nobody would flush it
    assert path.read_text() == "queued\nlate\n"


def test_work_from_threads_runs_once_each_in_order_past_the_inline_threshold(
        to_file: tuple[_Writer, Path]) -> None:
    writer, path = to_file

    class Line:
        def __init__(self, text: str) -> None:
            self.text = text

        def run(self, increments: dict[Any, float] | None) -> str:
            return self.text

    def worker(n: int) -> None:
        for i in range(1000):  # past MAX_PENDING: the threads take batches themselves too
            if i % 3:
                _deferred.defer(Line(f"{n}:{i}"))
            else:
                writer.line(f"{n}:{i}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(_deferred._pending) < _deferred.MAX_PENDING
    _deferred.flush()
    lines = path.read_text().splitlines()
    assert len(lines) == 4000
    for n in range(4):
        assert [int(x.split(":")[1]) for x in lines if x.startswith(f"{n}:")] == list(range(1000))


def test_the_flusher_thread_takes_batches_by_itself(tmp_path: Path) -> None:
    path = tmp_path / "out.log"
    with path.open("w") as stream:
        writer = _Writer(stream)
        _deferred.set_sink(writer)
        try:
            done = threading.Event()

            class Signal:
                def run(self, increments: dict[Any, float] | None) -> str:
                    done.set()
                    return "by the flusher"

            _deferred.defer(Signal())
            assert done.wait(5), "no batch was taken within 5 s"
            writer.close()
        finally:
            _deferred.set_sink(None)
    assert path.read_text() == "by the flusher\n"
