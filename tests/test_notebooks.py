"""The notebooks run from top to bottom without an error, in a fresh kernel, with Agg.

They are executed with nbclient, which raises ``CellExecutionError`` for any error a cell
shows — an exception group from ``trio.run`` included (nbmake has let those pass as
success). The notebooks assert their own results, so a wrong picture's data fails here.

These tests are synchronous on purpose: nbclient runs its own asyncio loop, which must not
run inside Trio's.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NAMES = ["01_restart_strategies.ipynb", "02_shutdown_bands.ipynb"]


@pytest.fixture
def kernel_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``python3`` kernel that is this interpreter, and Jupyter state kept in tmp_path.

    A ``python3`` kernelspec of the user's (in ~/.local/share/jupyter) would otherwise win
    and could start another Python, without this package or its dependencies.
    """
    spec_dir = tmp_path / "jupyter" / "kernels" / "python3"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (this interpreter)",
        "language": "python",
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    monkeypatch.setenv("MPLBACKEND", "Agg")


def execute(nb: Any) -> Any:
    client = NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    return client.execute()


# nbformat has no type annotations: its notebooks are dict-like NotebookNode values.
def read(name: str) -> Any:
    return nbformat.read(NOTEBOOKS / name, as_version=4)  # type: ignore[no-untyped-call]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.usefixtures("kernel_env")
def test_notebook_runs_clean(name: str) -> None:
    nb = execute(read(name))
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert all(cell.execution_count is not None for cell in code)
    outputs = [output for cell in code for output in cell.outputs]
    # Warnings (a RuntimeWarning from trio.run inside the kernel, say) go to stderr.
    assert [o.text for o in outputs if o.output_type == "stream" and o.name == "stderr"] == []
    assert [o for o in outputs if o.output_type == "error"] == []
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(images) == {"01_restart_strategies.ipynb": 1, "02_shutdown_bands.ipynb": 2}[name]


@pytest.mark.parametrize("name", NAMES)
def test_notebook_is_committed_without_outputs(name: str) -> None:
    nb = read(name)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    code = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert code != []
    assert [(cell.execution_count, cell.outputs) for cell in code] == [(None, [])] * len(code)
    # The backend is chosen before anything can import pyplot.
    assert code[0].source.startswith('import matplotlib\n\nmatplotlib.use("Agg")')


@pytest.mark.usefixtures("kernel_env")
def test_an_exception_group_from_trio_run_fails_the_notebook() -> None:
    # The harness must not let a notebook whose trio.run raised an ExceptionGroup pass.
    source = (
        "import trio\n"
        "\n"
        "async def boom():\n"
        "    raise ValueError('boom in a task')\n"
        "\n"
        "async def main():\n"
        "    async with trio.open_nursery() as nursery:\n"
        "        nursery.start_soon(boom)\n"
        "\n"
        "trio.run(main)\n"
    )
    cell = nbformat.v4.new_code_cell(source)  # type: ignore[no-untyped-call]
    nb = nbformat.v4.new_notebook(cells=[cell])  # type: ignore[no-untyped-call]
    with pytest.raises(CellExecutionError, match=r"ExceptionGroup") as caught:
        execute(nb)
    assert "boom in a task" in str(caught.value)
