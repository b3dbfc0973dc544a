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


def mlp_spec(name: str, *, hidden: int = 16, epochs: int = 3, batch_size: int = 32,
             train_extra: str = "", export: str = "") -> str:
    """The small breast-cancer MLP most tests build (30 -> hidden -> relu -> 2, softmax head,
    adam), with the lines that vary between tests as arguments. `train_extra` goes inside the
    train mapping (", eval_metric: [acc, ce]"); `export` is the export mapping's body."""
    lines = [f"name: {name}",
             "input: {shape: [30]}",
             "layers:",
             f"  - {{op: FullyConnected, name: fc1, num_hidden: {hidden}}}",
             "  - {op: Activation, name: relu1, act_type: relu}",
             "  - {op: FullyConnected, name: fc2, num_hidden: 2}",
             "output: {op: SoftmaxOutput, name: softmax}",
             "data:",
             "  train: {path: bc.csv, label: benign}",
             f"train: {{epochs: {epochs}, batch_size: {batch_size}, optimizer: adam, "
             f"optimizer_params: {{learning_rate: 0.01}}{train_extra}}}"]
    if export:
        lines.append(f"export: {{{export}}}")
    return "\n".join(lines) + "\n"
