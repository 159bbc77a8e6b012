"""edge/ is what the device runs: it imports nothing from train/ or convert/, and not TensorFlow (the one
exception is the interpreter's last-resort fallback to tf.lite on a workstation). Read from the source, so a
lazy import inside a function counts too."""

from __future__ import annotations

import ast
from pathlib import Path

EDGE = Path(__file__).resolve().parent.parent / "edge"
FORBIDDEN = ("scenecap.train", "scenecap.convert", "tensorflow", "keras")
# module -> the forbidden imports it may make, and why
ALLOWED = {"interpreter.py": {"tensorflow"}}  # find_runtime: tf.lite when no LiteRT runtime is installed


def _imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out.add(node.module)
    return out


def test_edge_imports_nothing_from_train_convert_or_tensorflow():
    files = sorted(EDGE.glob("*.py"))
    assert len(files) > 10, files
    bad = []
    for path in files:
        for name in sorted(_imports(path)):
            hit = next((f for f in FORBIDDEN if name == f or name.startswith(f + ".")), None)
            if hit and hit not in ALLOWED.get(path.name, set()):
                bad.append(f"edge/{path.name} imports {name}")
    assert not bad, bad
