"""Executes a notebook in place with nbclient, so the committed file shows its outputs.

    python notebooks/execute.py notebooks/tutorial.ipynb
"""

import os
import sys

import nbformat
from nbclient import NotebookClient


def main(path: str) -> None:
    notebook = nbformat.read(path, as_version=4)
    root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
    NotebookClient(notebook, timeout=1800, kernel_name="python3", resources={"metadata": {"path": root}}).execute()
    for cell in notebook.cells:
        cell.metadata.pop("execution", None)  # timestamps only: keep diffs to what changed
    nbformat.write(notebook, path)


if __name__ == "__main__":
    main(sys.argv[1])
