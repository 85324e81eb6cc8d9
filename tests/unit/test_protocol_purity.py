"""The sans-IO core (pipeline/protocol/) imports no I/O, concurrency or clock modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "pipeline" / "protocol"
FORBIDDEN = frozenset(
    {
        "asyncio",
        "aiortc",
        "aioice",
        "multiprocessing",
        "os",
        "pathlib",
        "io",
        "socket",
        "shutil",
        "threading",
        "time",
        "subprocess",
        "uvloop",
        "aiohttp",
        "aiofiles",
        "psutil",
        "tempfile",
        "glob",
        "mmap",
        "fcntl",
        "select",
        "selectors",
        "signal",
        "importlib",
        "datetime",
        "concurrent",
        "sqlite3",
    }
)
# Builtins that reach the filesystem, the clock or arbitrary code.
FORBIDDEN_CALLS = frozenset({"open", "exec", "eval", "compile", "input", "breakpoint"})
MODULES = sorted(PROTOCOL_DIR.rglob("*.py"))


def _imported_modules(tree: ast.AST) -> list[tuple[int, str]]:
    """Absolute module names imported anywhere in the tree (functions included)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "__import__"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def _forbidden_imports(source: str) -> list[str]:
    tree = ast.parse(source)
    found = [
        f"line {line}: {name}"
        for line, name in _imported_modules(tree)
        if name.split(".")[0] in FORBIDDEN
    ]
    found += [
        f"line {node.lineno}: {node.func.id}()"
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS
    ]
    return found


def test_nothing_impure_is_loaded_by_importing_the_core() -> None:
    """At run time too: a fresh interpreter that imports every core module has
    loaded none of the I/O or concurrency packages (none of them indirectly)."""
    code = (
        "import sys\n"
        "import pipeline.protocol.frames, pipeline.protocol.sender, pipeline.protocol.receiver\n"
        "import pipeline.protocol.manifest, pipeline.protocol.paths, pipeline.protocol.events\n"
        "print(' '.join(sorted(sys.modules)))"
    )
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split())
    third_party_io = {"asyncio", "aiortc", "aioice", "multiprocessing", "uvloop", "aiohttp", "aiofiles", "psutil", "socket"}
    assert loaded & third_party_io == set()


def test_protocol_package_has_the_codec_modules() -> None:
    # Guards against the scan below passing vacuously on an empty directory.
    names = {path.name for path in MODULES}
    assert {"__init__.py", "frames.py", "errors.py"} <= names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PROTOCOL_DIR)))
def test_module_imports_nothing_impure(path: Path) -> None:
    assert _forbidden_imports(path.read_text(encoding="utf-8")) == []


@pytest.mark.parametrize(
    "source",
    [
        "import os",
        "import os.path",
        "import asyncio, json",
        "from asyncio import sleep",
        "from multiprocessing.shared_memory import SharedMemory",
        "import time as clock",
        "def f():\n    import socket",
        "if True:\n    from pathlib import Path",
        "try:\n    import uvloop\nexcept ImportError:\n    pass",
        "subprocess = __import__('subprocess')",
        "import aiofiles",
        "from tempfile import mkstemp",
        "with open('x') as f:\n    pass",
        "def f(p):\n    return open(p).read()",
        "from importlib import import_module",
    ],
)
def test_checker_catches_impure_imports(source: str) -> None:
    assert _forbidden_imports(source)


@pytest.mark.parametrize(
    "source",
    [
        "import json",
        "from .frames import encode_control",
        "from . import os",  # a sibling module, not the stdlib one
        "import timeit",  # name shares a prefix only
        "from collections.abc import Sequence",
    ],
)
def test_checker_allows_pure_imports(source: str) -> None:
    assert _forbidden_imports(source) == []
