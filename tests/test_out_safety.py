"""--out can only ever replace a symbuilder export, and one build writes a folder at a time.

Every refusal is checked at the CLI boundary: exit 2, one line naming the folder and why,
and the whole tree (the spec, its data, every file present before) byte for byte unchanged
with nothing added. The lock tests hold the lock in a real second process.
"""
import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from helpers import DATA, ROOT, write_spec
from symbuilder.export import folder as exporting
from symbuilder.cli import main
from symbuilder.errors import ExportError

SPEC = """\
    name: safe_mlp
    input: {shape: [30]}
    layers:
      - {op: FullyConnected, name: fc1, num_hidden: 8}
      - {op: FullyConnected, name: fc2, num_hidden: 2}
    output: {op: SoftmaxOutput, name: softmax}
    data:
      train: {path: ../data/sub/bc.csv, label: benign}
    train: {epochs: 1, batch_size: 64, optimizer: adam, optimizer_params: {learning_rate: 0.01}}
    """

# Holds out_lock(argv[1]) until its stdin closes; says "locked" once it holds it.
HOLDER = """
import sys
from symbuilder.pipeline import out_lock
with out_lock(sys.argv[1]):
    print("locked", flush=True)
    sys.stdin.read()
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    """tmp/proj (the working directory) with specs/spec.yaml reading data/sub/bc.csv, and
    an empty home folder, as in a container; returns the spec's path, relative."""
    proj = tmp_path / "proj"
    write_spec(proj / "specs", SPEC)
    os.makedirs(proj / "data" / "sub")
    shutil.copy(DATA, proj / "data" / "sub" / "bc.csv")
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(proj)
    return os.path.join("specs", "spec.yaml")


@pytest.fixture(scope="module")
def an_export(tmp_path_factory):
    """A real export of SPEC, built once; tests copy it."""
    folder = tmp_path_factory.mktemp("first")
    write_spec(folder / "specs", SPEC)
    os.makedirs(folder / "data" / "sub")
    shutil.copy(DATA, folder / "data" / "sub" / "bc.csv")
    out = folder / "built"
    assert main(["build", str(folder / "specs" / "spec.yaml"), "--out", str(out), "-q"]) == 0
    return out


def snapshot(root):
    """Everything under `root`: files with their bytes, links with their targets, folders."""
    tree = {}
    for here, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(here, name)
            rel = os.path.relpath(path, root)
            if os.path.islink(path):
                tree[rel] = ("link", os.readlink(path))
            elif os.path.isdir(path):
                tree[rel] = ("dir",)
            else:
                with open(path, "rb") as f:
                    tree[rel] = ("file", f.read())
    return tree


def refused(argv, capsys, tmp_path, located, expected):
    """Run the command; it must exit 2 with one line `located: ...expected...` and leave the
    whole tree as it was."""
    before = snapshot(tmp_path)
    code = main(argv)
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"{located}: "), lines[0]
    assert expected in lines[0], lines[0]
    assert "epoch" not in captured.err + captured.out  # refused before training
    assert snapshot(tmp_path) == before


def link(tmp_path, target):
    path = tmp_path / "proj" / "link"
    os.symlink(target, path)
    return "link"


def make_file(tmp_path):
    (tmp_path / "proj" / "notes.txt").write_text("my notes\n")
    return "notes.txt"


def make_unrelated(tmp_path):
    (tmp_path / "proj" / "thesis").mkdir()
    (tmp_path / "proj" / "thesis" / "thesis.tex").write_text("\\chapter{One}\n")
    return "thesis"


def make_manifest_only(tmp_path):
    """A folder whose manifest.json is JSON, but not one symbuilder wrote."""
    (tmp_path / "proj" / "web").mkdir()
    (tmp_path / "proj" / "web" / "manifest.json").write_text('{"name": "app", "files": {}}')
    (tmp_path / "proj" / "web" / "index.html").write_text("<html></html>")
    return "web"


def copy_export(an_export, tmp_path, name="old"):
    shutil.copytree(an_export, tmp_path / "proj" / name, symlinks=True)
    return name


# (id, make the --out (returns it), what the line says)
CASES = [
    ("dot", lambda t, e: ".", "is the working directory; choose another --out"),
    ("dotdot", lambda t, e: "..", "holds the working directory"),
    ("pwd", lambda t, e: str(t / "proj"), "is the working directory"),
    ("root", lambda t, e: "/", "holds the working directory"),
    ("home", lambda t, e: str(t / "home"), "is your home folder"),
    ("spec-folder", lambda t, e: "specs", "holds the spec specs/spec.yaml"),
    ("data-parent", lambda t, e: "data", "holds the data file ../data/sub/bc.csv"),
    ("file", lambda t, e: make_file(t), "--out names a file, not a folder"),
    ("link-dot", lambda t, e: link(t, "."), "is the working directory"),
    ("link-dotdot", lambda t, e: link(t, ".."), "holds the working directory"),
    ("link-root", lambda t, e: link(t, "/"), "holds the working directory"),
    ("link-home", lambda t, e: link(t, str(t / "home")), "is your home folder"),
    ("link-spec-folder", lambda t, e: link(t, "specs"), "holds the spec specs/spec.yaml"),
    ("link-data-parent", lambda t, e: link(t, str(t / "proj" / "data")),
     "holds the data file ../data/sub/bc.csv"),
    ("link-file", lambda t, e: link(t, make_file(t)), "--out names a file, not a folder"),
    ("link-unrelated", lambda t, e: link(t, make_unrelated(t)),
     "is a symbolic link to {real}, which is not a symbuilder export (it has no manifest"),
    ("link-dangling", lambda t, e: link(t, "nowhere"),
     "is a symbolic link to {real}, which is not a folder"),
    ("link-empty", lambda t, e: link(t, str(t / "empty")),
     "is a symbolic link to {real}, which is empty"),
    ("unrelated-file", lambda t, e: make_unrelated(t),
     "is not a symbuilder export (it has no manifest.json; it holds thesis.tex)"),
    ("foreign-manifest", lambda t, e: make_manifest_only(t),
     "its manifest.json is not a symbuilder manifest; it holds index.html, manifest.json"),
    ("garbage-manifest", lambda t, e: garbage_manifest(copy_export(e, t), t),
     "its manifest.json is not a symbuilder manifest; it holds curves.svg"),
    ("export-plus-file", lambda t, e: extra_file(copy_export(e, t), t),
     "holds files its manifest.json does not list (thesis.tex)"),
]


def garbage_manifest(name, tmp_path):
    (tmp_path / "proj" / name / "manifest.json").write_bytes(b"\x00garbage{")
    return name


def extra_file(name, tmp_path):
    (tmp_path / "proj" / name / "thesis.tex").write_text("\\chapter{One}\n")
    return name


@pytest.mark.parametrize("make, expected", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_an_out_that_is_not_an_export_is_refused_before_anything(project, tmp_path, capsys,
                                                                  an_export, make, expected):
    (tmp_path / "empty").mkdir()
    out = make(tmp_path, an_export)
    expected = expected.replace("{real}", os.path.realpath(out))  # a link's target, resolved
    refused(["build", project, "--out", out], capsys, tmp_path, out, expected)


@pytest.mark.parametrize("companion, setup, expected", [
    (".old.run", lambda p: (p / "notes.txt").write_text("n"),
     "holds notes.txt, so it is not symbuilder's run folder for --out old"),
    (".old.data", lambda p: (p / "arrays.npy").write_text("n"),
     "holds arrays.npy, so it is not symbuilder's data cache for --out old"),
])
def test_a_foreign_folder_beside_the_export_is_refused(project, tmp_path, capsys, an_export,
                                                       companion, setup, expected):
    copy_export(an_export, tmp_path)
    folder = tmp_path / "proj" / companion
    folder.mkdir()
    setup(folder)
    refused(["build", project, "--out", "old"], capsys, tmp_path, str(folder), expected)


def test_a_foreign_file_at_the_lock_name_is_refused_and_kept(project, tmp_path, capsys):
    (tmp_path / "proj" / ".new.lock").write_text("my padlock inventory\n")
    refused(["build", project, "--out", "new"], capsys, tmp_path,
            str(tmp_path / "proj" / ".new.lock"), "is not a symbuilder lock file")


def test_a_data_mistake_found_under_the_lock_leaves_nothing(project, tmp_path, capsys):
    """The lock (and the folders made to hold it) are taken before the data is read; a
    mistake found then must still leave the tree as it was."""
    refused(["build", project, "--out", "new/deep/model", "--set", "data.train.label=benig"],
            capsys, tmp_path, "--set data.train.label=benig", "no label column 'benig'")


def test_launch_refuses_the_same_outs_before_starting_any_process(project, tmp_path, capsys):
    out = make_unrelated(tmp_path)
    refused(["launch", "--workers", "2", project, "--set", "train.kvstore=dist_sync",
             "--out", out], capsys, tmp_path, out, "is not a symbuilder export")


def built_tree(out):
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    return manifest, sorted(os.listdir(out))


def test_a_previous_export_is_replaced_whole(project, tmp_path, capsys, an_export):
    copy_export(an_export, tmp_path)
    before = snapshot(tmp_path)
    assert main(["build", project, "--out", "old", "--epochs", "2", "-q"]) == 0, \
        capsys.readouterr().err
    manifest, files = built_tree("old")
    assert manifest["epochs_trained"] == 2 and "safe_mlp-0002.params" in files
    assert "safe_mlp-0001.params" not in files  # the old export went, whole
    after = snapshot(tmp_path)
    # Outside the export nothing changed and nothing was left: no lock, run or staging folder.
    assert {k: v for k, v in after.items() if not k.startswith("proj/old/")} == \
        {k: v for k, v in before.items() if not k.startswith("proj/old/")}


def test_an_empty_folder_is_built_into(project, tmp_path, capsys):
    (tmp_path / "proj" / "new").mkdir()
    assert main(["build", project, "--out", "new", "-q"]) == 0, capsys.readouterr().err
    assert built_tree("new")[0]["name"] == "safe_mlp"


def test_a_link_to_an_export_is_replaced_and_its_target_kept(project, tmp_path, capsys,
                                                              an_export):
    copy_export(an_export, tmp_path, "v1")
    os.symlink("v1", tmp_path / "proj" / "current")
    v1 = snapshot(tmp_path / "proj" / "v1")
    assert main(["build", project, "--out", "current", "--epochs", "2", "-q"]) == 0, \
        capsys.readouterr().err
    assert not os.path.islink("current") and built_tree("current")[0]["epochs_trained"] == 2
    assert snapshot(tmp_path / "proj" / "v1") == v1  # not followed out of the parent
    assert sorted(os.listdir(".")) == ["current", "data", "specs", "v1"]  # no link, no staging


def test_publish_checks_the_target_again(tmp_path):
    """A folder that became something else during training is not replaced (exit 1)."""
    target = tmp_path / "model"
    target.mkdir()
    (target / "thesis.tex").write_text("written while the build trained")
    staging = tmp_path / ".model.tmp-1-abc"
    staging.mkdir()
    before = snapshot(tmp_path)
    with pytest.raises(ExportError, match="is not a symbuilder export"):
        exporting.publish(str(staging), str(target))
    assert snapshot(tmp_path) == before


def test_only_symbuilder_staging_folders_of_dead_processes_are_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True)
    pid = int(dead.stdout)
    ours = tmp_path / f".model.tmp-{pid}-abc12345"
    no_pid = tmp_path / ".model.tmp-mine"  # not staging_dir's naming: not ours
    outside = tmp_path / "elsewhere"
    for folder in (ours, no_pid, outside):
        folder.mkdir()
        (folder / "file").write_text("x")
    old = 0  # far older than the hour after which the old code took a pid-less folder
    os.utime(no_pid, (old, old))
    link_name = tmp_path / f".model.tmp-{pid}-def67890"
    os.symlink(outside, link_name)
    assert exporting.clean_stale_staging(str(tmp_path / "model")) == [str(ours)]
    assert no_pid.exists() and (outside / "file").exists() and os.path.islink(link_name)


def start_holder(out, cwd):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, out], cwd=cwd, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_build_of_the_same_out_is_refused_naming_the_holder(project, tmp_path,
                                                                     capsys, an_export):
    copy_export(an_export, tmp_path)
    holder = start_holder("old", tmp_path / "proj")
    try:
        refused(["build", project, "--out", "old"], capsys, tmp_path, "old",
                f"another build is writing this folder (pid {holder.pid}: ")
        refused(["launch", "--workers", "2", project, "--set", "train.kvstore=dist_sync",
                 "--out", "old"], capsys, tmp_path, "old", f"(pid {holder.pid}: ")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert not os.path.exists(".old.lock")  # the holder's own lock file went with it


def test_a_lock_left_by_a_killed_build_blocks_nobody(project, tmp_path, capsys):
    holder = start_holder("new", tmp_path / "proj")
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    holder.stdin.close()
    holder.stdout.close()
    with open(".new.lock") as f:  # left behind: SIGKILL runs no cleanup
        assert json.load(f)["pid"] == holder.pid
    assert main(["build", project, "--out", "new", "-q"]) == 0, capsys.readouterr().err
    assert built_tree("new")[0]["name"] == "safe_mlp" and not os.path.exists(".new.lock")


@pytest.mark.slow
def test_launch_holds_the_lock_and_its_rank_0_writes_under_it(project, tmp_path, capsys):
    code = main(["launch", "--workers", "2", project, "--set", "train.kvstore=dist_sync",
                 "--out", "new", "--timeout", "120", "-q"])
    assert code == 0, capsys.readouterr()
    assert built_tree("new")[0]["name"] == "safe_mlp"
    assert sorted(os.listdir(".")) == ["data", "new", "specs"]

