"""Progress lines: rate and time left, at most one every ``every`` seconds, one at the end, notes, the heartbeat."""
import time

from conceptlens.pipeline.runs import Progress


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def progress(total=None, **kwargs):
    clock, lines = Clock(), []
    return Progress("job", total, log=lines.append, clock=clock, **kwargs), clock, lines


def test_lines_give_the_rate_and_the_time_left_and_come_at_most_every_period():
    p, clock, lines = progress(90, every=10.0)
    for _ in range(9):  # 9 rows over 9 s: nothing yet
        clock.now += 1
        p.update(1)
    assert lines == []
    clock.now += 1
    p.update(1)  # 10 rows in 10 s: 1 row/s, 80 rows left
    assert lines == ["job: 10/90 rows (1.0 rows/s, ~80 s left)"]
    clock.now += 5
    p.update(40)  # 50 rows in 15 s, but only 5 s since the last line
    assert len(lines) == 1
    clock.now += 5
    p.update(0)  # 50 rows in 20 s: 2.5 rows/s, 40 left -> 16 s
    assert lines[-1] == "job: 50/90 rows (2.5 rows/s, ~16 s left)"
    clock.now += 1
    p.update(40)  # the total, at once, and only once
    assert lines[-1] == "job: 90/90 rows (4.3 rows/s)" and len(lines) == 3
    p.finish()
    assert len(lines) == 3


def test_long_waits_and_slow_rates_read_in_minutes_and_fractions():
    p, clock, lines = progress(1000, unit="epochs")
    clock.now += 600
    p.update(10)
    assert lines == ["job: 10/1000 epochs (0.017 epochs/s, ~16.5 h left)"]
    p, clock, lines = progress(30, unit="classes")
    clock.now += 20
    p.update(10)
    assert lines == ["job: 10/30 classes (0.5 classes/s, ~40 s left)"]
    clock.now += 20
    p.update(10)
    assert lines[-1] == "job: 20/30 classes (0.5 classes/s, ~20 s left)"
    p, clock, lines = progress(100)
    clock.now += 30
    p.update(10)
    assert lines == ["job: 10/100 rows (0.33 rows/s, ~4 min left)"]


def test_a_note_forces_a_line_and_leads_it():
    p, clock, lines = progress(400, unit="images")
    clock.now += 2
    p.update(200, note="epoch 1/2, loss 0.5")
    assert lines == ["job: epoch 1/2, loss 0.5; 200/400 images (100.0 images/s, ~2 s left)"]
    clock.now += 2
    p.update(200, note="epoch 2/2, loss 0.25")  # the total and the note: one line
    assert lines[-1] == "job: epoch 2/2, loss 0.25; 400/400 images (100.0 images/s)" and len(lines) == 2


def test_without_a_total_finish_says_how_many_once():
    p, clock, lines = progress(None, every=10.0)
    clock.now += 4
    p.update(8)
    assert lines == []
    p.finish()
    assert lines == ["job: 8 rows (2.0 rows/s)"]
    p.finish()  # nothing new to say
    assert len(lines) == 1


def test_before_anything_is_counted_a_tick_says_how_long_it_has_run():
    p, clock, lines = progress(50, every=10.0)
    clock.now += 5
    p.tick()
    assert lines == []
    clock.now += 7
    p.tick()
    assert lines == ["job: 0/50 rows (12 s so far)"]
    q, clock, lines = progress(None, every=10.0)
    clock.now += 130
    q.tick()
    assert lines == ["job (2 min so far)"]


def test_as_a_context_it_speaks_while_waiting_then_stops_and_ends_with_the_final_line():
    lines = []
    with Progress("wait", 3, every=0.05, unit="items", log=lines.append) as p:
        time.sleep(0.3)  # nothing counted: the background thread speaks
        p.update(2)
    waiting = [line for line in lines if "so far" in line]
    assert waiting and all(line.startswith("wait: 0/3 items (") for line in waiting)
    assert lines[-1].startswith("wait: 2/3 items (")  # the final line, though the total was never reached
    after = len(lines)
    time.sleep(0.15)
    assert len(lines) == after  # the thread stopped
    failed = []
    try:
        with Progress("fail", 3, log=failed.append) as p:
            p.done = 1
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert failed == []  # no final line for work that failed
