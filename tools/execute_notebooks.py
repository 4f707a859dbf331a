"""Re-execute notebooks in place so their stored outputs are fresh (`make notebooks`).

The site is built from the outputs saved in the notebooks (execute_notebooks: off in _config.yml), and
`make test` re-runs every notebook with nbval to prove those outputs reproduce. This script is how an author
refreshes them after changing a chapter or the `lessons` package:

  .venv/bin/python tools/execute_notebooks.py                 # every notebook under book/
  .venv/bin/python tools/execute_notebooks.py book/mobilevit.ipynb

Each notebook runs top to bottom in a fresh kernel of *this* Python environment (the venv's ipykernel, whatever
kernelspec the notebook names), with its own folder as the working directory (as nbval and Jupyter do), a
300-second limit per cell, and the widget state saved into the notebook metadata so the site can show
ipywidgets without a kernel. Any cell error stops that notebook, leaves the file on disk untouched, and makes
the script exit non-zero. Seeding is the notebooks' own job (lessons.seed_everything in their first cell).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import ipykernel.kernelspec
import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import KernelManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

ROOT = Path(__file__).resolve().parent.parent
BOOK = ROOT / "book"
CELL_TIMEOUT_S = 300  # a chapter cell that needs longer belongs in lessons/ with a test, not in a notebook
KERNEL_NAME = "python3"


class CurrentEnvKernelSpecs(KernelSpecManager):
    """Resolve ``python3`` to ipykernel in the running interpreter, never to a kernelspec found elsewhere.

    A user-level kernelspec named python3 (~/.local/share/jupyter/kernels) would otherwise win over the venv's
    and run the notebook with another Python and other packages. nbval's --nbval-current-env does the same.
    """

    def get_kernel_spec(self, kernel_name: str):  # noqa: D102 (KernelSpecManager API)
        if kernel_name == KERNEL_NAME:
            return self.kernel_spec_class(
                resource_dir=ipykernel.kernelspec.RESOURCES, **ipykernel.kernelspec.get_kernel_dict()
            )
        return super().get_kernel_spec(kernel_name)


def find_notebooks(paths: list[str]) -> list[Path]:
    """The notebooks named on the command line (files or folders), or every notebook under book/."""
    roots = [Path(p) for p in paths] or [BOOK]
    found: list[Path] = []
    for root in roots:
        if root.is_dir():
            found += sorted(p for p in root.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
        elif root.suffix == ".ipynb" and root.is_file():
            found.append(root)
        else:
            raise SystemExit(f"{root}: not a notebook (.ipynb) or a folder")
    return found


def execute(path: Path) -> float:
    """Run one notebook in place; return its wall time in seconds.

    Raises CellExecutionError on a cell error, CellTimeoutError past CELL_TIMEOUT_S, DeadKernelError if the
    kernel dies (e.g. out of memory); the file is written only after every cell succeeded.
    """
    nb = nbformat.read(path, as_version=4)
    km = KernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=CurrentEnvKernelSpecs())
    client = NotebookClient(
        nb,
        km=km,
        kernel_name=KERNEL_NAME,
        timeout=CELL_TIMEOUT_S,
        resources={"metadata": {"path": str(path.parent.resolve())}},  # cwd = the notebook's folder
        store_widget_state=True,  # the site renders widgets from this saved state
        record_timing=False,  # no per-cell timestamps: they would change every run and clutter diffs
        allow_errors=False,
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    # Record the kernel as the generic python3 the site and nbval expect, not this machine's paths.
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": "Python 3 (ipykernel)", "language": "python"}
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", help="notebooks or folders (default: every notebook under book/)")
    args = parser.parse_args(argv)

    notebooks = find_notebooks(args.paths)
    if not notebooks:
        print("execute_notebooks: no notebooks found under book/ -- nothing to do")
        return 0

    failed: list[Path] = []
    total = 0.0
    for path in notebooks:
        label = path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path
        print(f"execute_notebooks: {label} ...", flush=True)
        try:
            elapsed = execute(path)
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as err:
            failed.append(path)
            print(f"execute_notebooks: FAILED {label} (file left unchanged)\n{err}", flush=True)
            continue
        total += elapsed
        print(f"execute_notebooks: {label}: {elapsed:.1f} s", flush=True)

    print(f"execute_notebooks: {len(notebooks) - len(failed)}/{len(notebooks)} notebooks in {total:.1f} s")
    if failed:
        print("execute_notebooks: failed: " + ", ".join(str(p) for p in failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
