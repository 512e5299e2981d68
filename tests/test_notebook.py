"""notebooks/rnn_f1_edition.ipynb: generated from build_notebook.py, committed without outputs,
and executed top to bottom (nbclient, QUICK sizes) without an error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOK = NOTEBOOKS / "rnn_f1_edition.ipynb"

pytestmark = pytest.mark.xdist_group("notebook")


def test_notebook_is_built_from_its_script_and_has_no_outputs():
    check = subprocess.run([sys.executable, str(NOTEBOOKS / "build_notebook.py"), "--check"],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    nb = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert len(code) >= 15
    assert all(c["outputs"] == [] and c["execution_count"] is None for c in code)
    sources = "\n".join("".join(c["source"]) for c in code)
    # every code cell leans on lapnet instead of re-implementing it
    assert "from lapnet" in sources and "import lapnet" not in sources.replace("from lapnet", "")
    for banned in ("nn.Module)", "def forward(", "optimizer.step(", ".backward()"):
        assert banned not in sources, banned


def test_notebook_executes_top_to_bottom(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env = {"LAPNET_NOTEBOOK_QUICK": "1", "LAPNET_NOTEBOOK_OUT": str(tmp_path / "runs")}
    old = {k: os.environ.get(k) for k in (*env, "MPLBACKEND")}
    os.environ.pop("MPLBACKEND", None)  # the kernel draws with IPython's inline backend
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                         resources={"metadata": {"path": str(tmp_path)}})
        client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "QUICK" in text and "max |NumPy - torch| =" in text and "test accuracy" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 12  # the diagrams and every experiment's figures were drawn
    assert (tmp_path / "runs" / "hamlet" / "model.safetensors").is_file()
