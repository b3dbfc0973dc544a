"""Progress ETAs: the bar's from the batches done, the run's (on the epoch line) from the
median epoch wall time so far; checked on a clock the test sets."""
import io
import types

from symbuilder.training.progress import ProgressReporter, duration


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


class Tty(io.StringIO):
    def isatty(self):
        return True


def _entry(epoch):
    return {"epoch": epoch, "train": {"accuracy": 0.5}, "val": {"accuracy": 0.6},
            "lr": None, "seconds": 1.0}


def test_the_bar_shows_the_epochs_time_left_from_the_batches_done():
    clock, stream = Clock(), Tty()
    reporter = ProgressReporter(lambda line: None, total_epochs=1, batches_per_epoch=4,
                                batch_size=10, stream=stream, clock=clock)
    metric = types.SimpleNamespace(get=lambda: (["accuracy"], [0.5]))
    reporter.start_epoch()
    clock.t = 1.5  # one batch of four in 1.5 s: three more take 4.5 s
    reporter.batch_done(types.SimpleNamespace(epoch=0, nbatch=0, eval_metric=metric))
    assert "1/4 7 samples/s eta 4s accuracy=0.5000" in stream.getvalue()  # 4.5 rounds to 4


def test_the_epoch_line_shows_the_runs_time_left_from_the_median_epoch():
    clock, lines = Clock(), []
    reporter = ProgressReporter(lines.append, total_epochs=4, batches_per_epoch=1,
                                batch_size=10, bar=False, clock=clock)
    walls = [10.0, 70.0, 20.0, 5.0]
    for epoch, wall in enumerate(walls, start=1):
        reporter.start_epoch()
        clock.t += wall
        reporter.epoch_done(_entry(epoch))
    # medians: 10 x 3 epochs left; (10, 70) -> 40 x 2; (10, 70, 20) -> 20 x 1; none at the end
    ends = [line.rsplit("  ", 1)[-1] for line in lines]
    assert ends == ["eta 30s", "eta 1m20s", "eta 20s", "1.00s"]
    assert lines[0] == ("epoch 1/4  train accuracy=0.5000  val accuracy=0.6000  1.00s  "
                        "eta 30s")


def test_durations_read_as_a_person_writes_them():
    assert [duration(s) for s in (0.4, 59.4, 60, 185, 3600 + 7 * 60 + 20)] == [
        "0s", "59s", "1m00s", "3m05s", "1h07m"]
