"""A Pi with only the edge extra: the workstation commands are listed, and each says in one line what to install.

The subprocess makes TensorFlow and the other train-extra libraries unimportable, raising ModuleNotFoundError as
a missing package does (not ImportError), so this is what `pip install 'scenecap[edge]'` gives.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

TRAIN_ONLY = ("tensorflow", "keras", "tf_keras", "tensorboard", "pycocoevalcap", "tqdm", "matplotlib", "yaml", "h5py")
EDGE_ONLY = f"""
import sys
class _NotInstalled:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {TRAIN_ONLY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, _NotInstalled())
from scenecap.cli import main
sys.exit(main(sys.argv[1:]))
"""

# Each workstation command as a user would type it; the inputs need not exist, the missing extra is said first.
COMMANDS = {
    "synth": ["synth", "{tmp}/synth", "--train", "4"],
    "train": ["train", "{tmp}/captions.json", "--out", "{tmp}/run", "--lang", "ar"],
    "export": ["export", "{tmp}/run", "--out", "{tmp}/export"],
    "convert": ["convert", "{tmp}/export", "--out", "{tmp}/bundle"],
    "eval": ["eval", "{tmp}/bundle", "--out", "{tmp}/report"],
    "import-seed": ["import-seed", "--weights", "{tmp}", "--tokenizer", "{tmp}/t.pickle", "--out", "{tmp}/seed"],
    "bench": ["bench", "--quick", "--work", "{tmp}/work", "--out", "{tmp}/results"],
}


def on_the_edge(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", EDGE_ONLY, *args], capture_output=True, text=True, timeout=300)


def test_help_lists_every_command_without_the_train_extra():
    r = on_the_edge("--help")
    assert r.returncode == 0, r.stderr
    for command in [*COMMANDS, "caption", "inspect"]:
        assert f"    {command} " in r.stdout, command


@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_workstation_command_says_in_one_line_to_install_the_train_extra(tmp_path, command):
    assert on_the_edge(command, "--help").returncode == 0  # its own help needs nothing heavy either
    r = on_the_edge(*(a.format(tmp=tmp_path) for a in COMMANDS[command]))
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith(f"scenecap: error: scenecap {command} needs ") and "pip install 'scenecap[train]'" in last
    assert not list(tmp_path.iterdir())  # and nothing was written
