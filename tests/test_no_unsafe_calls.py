"""The package source makes no call that runs code or a shell from data: unpickling outside the one restricted
unpickler, eval/exec, yaml.load without a safe loader, shell=True, os.system, os.popen.

Every .py file of the package (scenecap/, train/, convert/, edge/, benchmarks/) is parsed with `ast`, so a comment
or a string that mentions `pickle.loads` does not count, and `import pickle as p; p.loads(...)`,
`from os import system` or `getattr(pickle, "loads")` do. The one allowed use is named below with its file and
reason. The self-checks at the end prove the scan finds each pattern (and not its safe look-alikes).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("scenecap", "train", "convert", "edge", "benchmarks")

# Qualified names whose use runs code chosen by data, or a command line through a shell.
UNSAFE = {
    **{f"{m}.{f}": "unpickling calls whatever the data names" for m in ("pickle", "_pickle", "cPickle", "dill")
       for f in ("load", "loads", "Unpickler")},
    "marshal.load": "unmarshalling code objects", "marshal.loads": "unmarshalling code objects",
    "shelve.open": "shelve unpickles its values", "pandas.read_pickle": "unpickling", "joblib.load": "unpickling",
    "builtins.eval": "runs a string as Python", "builtins.exec": "runs a string as Python",
    "os.system": "runs a shell command line", "os.popen": "runs a shell command line",
    "subprocess.getoutput": "runs a shell command line", "subprocess.getstatusoutput": "runs a shell command line",
    "asyncio.create_subprocess_shell": "runs a shell command line",
    **{f"yaml.{f}": "yaml's unsafe loaders build arbitrary Python objects"
       for f in ("unsafe_load", "unsafe_load_all", "full_load", "full_load_all")},
}
PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "marshal", "shelve"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}

# (file, what, where) -> why it is safe. Exact: the same code in another file, or the class without its
# find_class, is a finding again.
ALLOWED = {
    ("convert/safe_pickle.py", "pickle.Unpickler", "base of class _RestrictedUnpickler, which defines find_class"):
        "the project's safe unpickler: find_class admits only the globals a Keras Tokenizer pickle uses (the class "
        "itself as a plain stand-in, OrderedDict/defaultdict, builtin types) and refuses everything else before "
        "it is called; test_safe_tokenizer.py and test_fuzz.py feed it hostile pickles",
}


@dataclass(frozen=True)
class Finding:
    file: str
    line: int
    what: str
    where: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.what} ({self.where}): {UNSAFE.get(self.what, '')}".rstrip(": ")


class Scanner(ast.NodeVisitor):
    """Finds the unsafe names and calls in one module, following its import aliases."""

    def __init__(self, file: str):
        self.file = file
        self.aliases: dict[str, str] = {"__builtins__": "builtins"}
        self.scope: list[str] = []
        self.findings: list[Finding] = []

    def add(self, node: ast.AST, what: str, where: str | None = None) -> None:
        self.findings.append(Finding(self.file, getattr(node, "lineno", 0), what,
                                     where or (f"in {'.'.join(self.scope)}" if self.scope else "at module level")))

    def qualified(self, node: ast.AST) -> str | None:
        """`p.loads` after `import pickle as p` -> 'pickle.loads'; a bare `eval` -> 'builtins.eval'."""
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, f"builtins.{node.id}")
        if isinstance(node, ast.Attribute):
            base = self.qualified(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    # -- imports: remember what each local name stands for
    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self.aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module:
            return  # relative imports are the project's own modules
        for a in node.names:
            if a.name == "*" and node.module.split(".")[0] in PICKLE_MODULES | {"os", "subprocess", "yaml"}:
                self.add(node, f"from {node.module} import *")
            self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"

    # -- scopes, for readable findings; class bases get their own context (the allowance depends on it)
    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        methods = {n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
        for base in node.bases:
            name = self.qualified(base)
            if name in UNSAFE:
                extra = ", which defines find_class" if "find_class" in methods else ""
                self.add(base, name, f"base of class {node.name}{extra}")
            else:
                self.visit(base)
        for child in [*node.decorator_list, *node.keywords]:
            self.visit(child)
        self.scope.append(node.name)
        for child in node.body:
            self.visit(child)
        self.scope.pop()

    # -- uses
    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load) and self.qualified(node) in UNSAFE:
            self.add(node, self.qualified(node))

    def visit_Attribute(self, node: ast.Attribute) -> None:
        name = self.qualified(node)
        if name in UNSAFE:
            self.add(node, name)
            return
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        name = self.qualified(node.func) or ""
        kw = {k.arg: k.value for k in node.keywords if k.arg}
        if "shell" in kw and not _is_false(kw["shell"]):
            self.add(node, "shell=True", f"{name or 'a call'}, {self._where()}")
        if name in ("yaml.load", "yaml.load_all"):
            loader = kw.get("Loader", node.args[1] if len(node.args) > 1 else None)
            loader_name = (self.qualified(loader) or "").rsplit(".", 1)[-1] if loader is not None else ""
            if loader_name not in SAFE_YAML_LOADERS:
                self.add(node, f"{name} without SafeLoader")
        if name in ("numpy.load", "numpy.lib.npyio.load") and "allow_pickle" in kw and \
                not _is_false(kw["allow_pickle"]):
            self.add(node, "numpy.load(allow_pickle=True)")
        if name == "builtins.getattr" and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
            target = f"{self.qualified(node.args[0])}.{node.args[1].value}"
            if target in UNSAFE:
                self.add(node, target, f"through getattr, {self._where()}")
        self.generic_visit(node)

    def _where(self) -> str:
        return f"in {'.'.join(self.scope)}" if self.scope else "at module level"


def _is_false(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and node.value in (False, None, 0)


def scan_source(source: str, file: str) -> list[Finding]:
    scanner = Scanner(file)
    scanner.visit(ast.parse(source, filename=file))
    return scanner.findings


def package_files() -> list[Path]:
    return sorted(p for d in PACKAGE_DIRS for p in (ROOT / d).rglob("*.py") if "__pycache__" not in p.parts)


def scan_package() -> list[Finding]:
    out = []
    for path in package_files():
        out += scan_source(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())
    return out


def _key(f: Finding) -> tuple[str, str, str]:
    return (f.file, f.what, f.where)


# --- the package ------------------------------------------------------------------------------------------------

def test_the_package_makes_no_unsafe_call():
    findings = [f for f in scan_package() if _key(f) not in ALLOWED]
    assert not findings, "unsafe calls in the package source:\n" + "\n".join(map(str, findings))


def test_every_allowance_is_still_used():
    """An allowance whose code is gone must go too, or it would silently cover a new use one day."""
    found = {_key(f) for f in scan_package()}
    assert set(ALLOWED) <= found, set(ALLOWED) - found


def test_the_scan_reads_every_package_file():
    files = {p.relative_to(ROOT).as_posix() for p in package_files()}
    for expected in ("scenecap/cli.py", "train/config.py", "convert/safe_pickle.py", "edge/live.py",
                     "benchmarks/soak.py"):
        assert expected in files
    assert len(files) >= 60


# --- self-checks: the scan can fail -----------------------------------------------------------------------------

UNSAFE_SNIPPETS = {
    "pickle.loads": ("import pickle\npickle.loads(b'')", "pickle.loads"),
    "pickle.load aliased": ("import pickle as p\nwith open('f', 'rb') as f:\n    p.load(f)", "pickle.load"),
    "from pickle import loads": ("from pickle import loads as L\nL(b'')", "pickle.loads"),
    "Unpickler without find_class": ("import pickle\nclass U(pickle.Unpickler):\n    pass", "pickle.Unpickler"),
    "Unpickler used directly": ("import io, pickle\npickle.Unpickler(io.BytesIO(b'')).load()", "pickle.Unpickler"),
    "getattr(pickle, 'loads')": ("import pickle\ngetattr(pickle, 'loads')(b'')", "pickle.loads"),
    "a reference, called later": ("import pickle\nf = pickle.loads\nf(b'')", "pickle.loads"),
    "marshal.loads": ("import marshal\nmarshal.loads(b'')", "marshal.loads"),
    "numpy allow_pickle": ("import numpy as np\nnp.load('a.npy', allow_pickle=True)", "allow_pickle=True"),
    "eval": ("x = eval('1 + 1')", "builtins.eval"),
    "exec in a function": ("def f(code):\n    exec(code)", "builtins.exec"),
    "builtins.eval": ("import builtins\nbuiltins.eval('1')", "builtins.eval"),
    "yaml.load, no loader": ("import yaml\nyaml.load(open('c.yaml'))", "yaml.load without SafeLoader"),
    "yaml.load, full loader": ("import yaml\nyaml.load(s, Loader=yaml.FullLoader)", "yaml.load without SafeLoader"),
    "yaml.load, unsafe loader positional": ("from yaml import load, UnsafeLoader\nload(s, UnsafeLoader)",
                                            "yaml.load without SafeLoader"),
    "yaml.unsafe_load": ("import yaml\nyaml.unsafe_load(s)", "yaml.unsafe_load"),
    "subprocess shell=True": ("import subprocess\nsubprocess.run('ls ' + d, shell=True)", "shell=True"),
    "Popen shell=variable": ("from subprocess import Popen\nPopen(cmd, shell=use_shell)", "shell=True"),
    "os.system": ("import os\nos.system('rm -rf ' + d)", "os.system"),
    "from os import system": ("from os import system\nsystem('ls')", "os.system"),
    "os.popen": ("import os\nos.popen('ls').read()", "os.popen"),
    "subprocess.getoutput": ("import subprocess\nsubprocess.getoutput('ls')", "subprocess.getoutput"),
}
SAFE_SNIPPETS = {
    "a comment and a string": "# pickle.loads(data) would run code\nmsg = 'never eval( or os.system(' ",
    "pickle.dumps": "import pickle\nb = pickle.dumps({'a': 1}, protocol=2)",
    "a model's eval method": "model.eval()\nresult = model.evaluate(x)",
    "yaml.safe_load": "import yaml\nyaml.safe_load(text)",
    "yaml.load with SafeLoader": "import yaml\nyaml.load(text, Loader=yaml.SafeLoader)",
    "yaml.load with CSafeLoader positional": "from yaml import load, CSafeLoader\nload(text, CSafeLoader)",
    "subprocess list, no shell": "import subprocess\nsubprocess.run(['ls', d], check=True, shell=False)",
    "numpy load refusing pickles": "import numpy as np\nnp.load('a.npy', allow_pickle=False)\nnp.load('b.npy')",
    "os.path and re.compile": "import os, re\nos.path.join('a', 'b')\nre.compile('x')",
}


@pytest.mark.parametrize("name", sorted(UNSAFE_SNIPPETS))
def test_the_scan_finds(name):
    source, expected = UNSAFE_SNIPPETS[name]
    findings = scan_source(source, "edge/example.py")
    assert [f.what for f in findings if expected in f.what], findings


@pytest.mark.parametrize("name", sorted(SAFE_SNIPPETS))
def test_the_scan_passes_safe_look_alikes(name):
    assert scan_source(SAFE_SNIPPETS[name], "edge/example.py") == []


def test_the_allowance_is_by_file_and_by_the_restriction():
    safe_unpickler = ("import pickle\nclass _RestrictedUnpickler(pickle.Unpickler):\n"
                      "    def find_class(self, module, name):\n        raise pickle.UnpicklingError(name)\n")
    assert all(_key(f) in ALLOWED for f in scan_source(safe_unpickler, "convert/safe_pickle.py"))
    elsewhere = scan_source(safe_unpickler, "edge/other.py")
    assert elsewhere and not any(_key(f) in ALLOWED for f in elsewhere)
    no_restriction = safe_unpickler.replace("def find_class", "def other")
    assert not all(_key(f) in ALLOWED for f in scan_source(no_restriction, "convert/safe_pickle.py"))
