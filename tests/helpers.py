"""What many tests need: the project's folders and a spec file beside a copy of real data."""
import os
import shutil
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "specs", "data", "breast_cancer.csv")  # label column: benign


def write_spec(folder, body: str, name: str = "spec.yaml") -> str:
    """Write the (dedented) spec `body` into `folder` beside bc.csv, a copy of the breast
    cancer data; return the spec's path (a str)."""
    folder = str(folder)
    os.makedirs(folder, exist_ok=True)
    shutil.copy(DATA, os.path.join(folder, "bc.csv"))
    path = os.path.join(folder, name)
    with open(path, "w") as f:
        f.write(textwrap.dedent(body))
    return path
