"""Progress bars and spreads (`hftransfer.console`): one helper, the same rules everywhere."""

from __future__ import annotations

import io
import logging

import pytest

from hftransfer.console import is_main_process, mean_sd, progress, progress_enabled


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal(monkeypatch):
    """This is the only process and the hftransfer logger says info; `terminal()` makes stderr a terminal (in the
    test body: pytest's capture replaces sys.stderr after fixtures run)."""
    stream = _Terminal()
    for name in ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    logger = logging.getLogger("hftransfer")
    level = logger.level
    logger.setLevel(logging.INFO)
    yield lambda: monkeypatch.setattr("sys.stderr", stream) or stream
    logger.setLevel(level)


def test_a_bar_shows_in_a_terminal_for_many_batches(terminal):
    stream = terminal()
    assert progress_enabled(100)
    bar = progress(range(100), desc="features", delay=0)
    assert not bar.disable
    assert list(bar) == list(range(100))
    bar.close()
    assert "features" in stream.getvalue()


def test_no_bar_when_not_a_terminal(terminal, monkeypatch):
    terminal()
    assert progress_enabled(100)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not progress_enabled(100)
    assert progress(range(100)).disable


def test_no_bar_for_tiny_inputs(terminal):
    """'Progress bars for 2 texts' is noise: a few batches finish before a bar would say anything."""
    terminal()
    assert progress(range(2)).disable and progress(total=4).disable
    assert not progress(total=5).disable
    assert not progress(range(2), min_steps=1).disable  # compare's runs: each is long


@pytest.mark.parametrize("variable", ["RANK", "LOCAL_RANK", "OMPI_COMM_WORLD_RANK"])
def test_no_bar_on_other_processes(terminal, monkeypatch, variable):
    terminal()
    monkeypatch.setenv(variable, "1")
    assert not is_main_process() and progress(range(100)).disable
    monkeypatch.setenv(variable, "0")
    assert is_main_process() and not progress(range(100)).disable


def test_no_bar_when_quiet(terminal):
    terminal()
    assert not progress(range(100)).disable
    logging.getLogger("hftransfer").setLevel(logging.WARNING)  # -q
    assert progress(range(100)).disable


def test_mean_sd_needs_two_values():
    assert mean_sd([0.5]) == "0.5000 (1 seed)"
    assert mean_sd([0.9, 0.8, 1.0]) == "0.9000 ± 0.1000"
    assert "±" not in mean_sd([0.8123], 3)


def test_cli_turns_library_bars_off_outside_a_terminal(monkeypatch):
    from transformers.utils import logging as hf_logging

    from hftransfer.cli import configure_logging

    monkeypatch.setattr("sys.stderr", io.StringIO())
    monkeypatch.delenv("HF_DATASETS_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    enabled = hf_logging.is_progress_bar_enabled()
    try:
        configure_logging()
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        if enabled:
            hf_logging.enable_progress_bar()
