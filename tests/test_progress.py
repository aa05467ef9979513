"""jem.progress: a real tqdm on a terminal, a few short plain lines in logs (no carriage returns,
no escape codes)."""

import io

from jem.progress import Lines, progress


def _lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_lines_report_start_every_quarter_and_end():
    out = io.StringIO()
    seen = list(Lines(range(100), desc="views", unit="img", file=out))
    assert seen == list(range(100))
    shown = [line.split(" [")[0] for line in _lines(out)]
    assert shown == [f"views: {n}/100 img" for n in (0, 25, 50, 75, 100)]
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_lines_with_updates_postfix_and_an_unfinished_close():
    out = io.StringIO()
    with Lines(total=8, desc="evaluate", unit="step", file=out) as bar:
        bar.set_postfix_str("features")
        bar.update(3)  # 3/8 crosses the first quarter (2/8)
        bar.update(1)  # 4/8: the half
    shown = [line.split(" [")[0] for line in _lines(out)]
    # start, first quarter, half, and the close of an unfinished bar (the same count, said again)
    assert shown == ["evaluate: 0/8 step", "evaluate: 3/8 step (features)", "evaluate: 4/8 step (features)",
                     "evaluate: 4/8 step (features)"]


def test_progress_off_a_terminal_is_plain_lines_and_disable_is_silent(capsys):
    assert isinstance(progress(range(3), desc="x"), Lines)  # pytest's captured stderr is not a terminal
    list(progress(range(3), desc="quiet", disable=True))
    assert "quiet" not in capsys.readouterr().err


def test_steps_off_a_terminal_name_each_step_as_it_starts(capsys):
    from jem.progress import Steps

    bar = Steps("baselines", ["features", "kNN", "linear probe"])
    bar.advance()
    bar.advance()
    assert [ln.split(" [")[0] for ln in capsys.readouterr().err.splitlines()] == [
        "baselines: 0/3 step (features)", "baselines: 1/3 step (kNN)", "baselines: 2/3 step (linear probe)"]
    bar.advance()
    bar.close()
    assert [ln.split(" [")[0] for ln in capsys.readouterr().err.splitlines()] == ["baselines: 3/3 step"]
