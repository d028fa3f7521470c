"""Every Python example of the README runs as written, in order, with Sybil."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
import trio.testing
from sybil import Sybil
from sybil.parsers.markdown import PythonCodeBlockParser

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_python_example_of_the_readme_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # the examples make app.db where they run
    document = Sybil(parsers=[PythonCodeBlockParser()]).parse(README)
    # Not "__main__": the blocks that start a service for good stay defined, not started.
    document.namespace["__name__"] = "readme"
    examples = list(document)
    assert len(examples) == 12
    for example in examples:
        example.evaluate()
    out = capsys.readouterr().out
    assert "connected to postgresql://" in out
    assert "report sent" in out
    assert "[(1, 'hello')]" in out
    assert "HTTP/1.0 200 OK" in out
    assert "served by " in out
    assert "running starting\nstopped running\n" in out  # the singleton handed over
    # The testing example is a test itself: run it as pytest-trio would.
    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(document.namespace["test_restarts"], clock, clock=clock)
