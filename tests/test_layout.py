"""The house's import rules, as each module's docstring states them (docs/development.md).

    transforms/nst/   the engine: torch, torchvision, Pillow and itself; no Beam, no storage
    transforms/       records, limits, claims, progress, devices, report, storage, locations, local_disk, names, reading, logs,
                      outputs, tally, index and handler: no Beam; manifest, stylize, results, plan: Beam wiring; none
                      imports pipeline/; stylize, results, outputs and manifest load no torch
    transforms/storage.py  the only module that imports fsspec
    pipeline/         the job: imports what it wires

Imports flow one way: pipeline -> Beam transforms -> plain records and storage -> the engine.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FILESYSTEMS = ("fsspec", "gcsfs", "s3fs", "adlfs")
PLAIN = (
    "records",
    "limits",
    "claims",
    "progress",
    "devices",
    "report",
    "storage",
    "locations",
    "local_disk",
    "names",
    "reading",
    "logs",
    "outputs",
    "handler",
    "tally",
    "index",
)


def imports_of(source: str) -> set[str]:
    """Every module ``source`` imports (anywhere in it)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def modules() -> list[Path]:
    return sorted([*ROOT.glob("pipeline/*.py"), *ROOT.glob("transforms/**/*.py")])


def broken_rules(where: str, source: str) -> list[str]:
    """The import rules the module at ``where`` (a path in the checkout) breaks with ``source``,
    each as 'module: imports X (rule)'."""
    broken = []
    for name in sorted(imports_of(source)):
        root = name.split(".")[0]
        if root in FILESYSTEMS and where != "transforms/storage.py":
            broken.append(f"{where}: imports {name} (only storage.py talks to fsspec)")
        if where.startswith("transforms/") and root == "pipeline":
            broken.append(f"{where}: imports {name} (transforms never import the job)")
        if where.startswith("transforms/nst/") and (
            root in ("apache_beam", "tqdm") or (root == "transforms" and not name.startswith("transforms.nst"))
        ):
            broken.append(f"{where}: imports {name} (the engine is pure PyTorch and Pillow)")
        if Path(where).stem in PLAIN and where.count("/") == 1 and root == "apache_beam":
            broken.append(f"{where}: imports {name} (plain Python: only manifest, stylize, results and plan wire Beam)")
    return broken


def test_every_module_keeps_the_import_rules() -> None:
    assert len(modules()) > 25
    broken = [rule for path in modules() for rule in broken_rules(path.relative_to(ROOT).as_posix(), path.read_text())]
    assert broken == []


def test_every_module_states_its_import_rule() -> None:
    for path in modules():
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        if path.name in ("__init__.py", "__main__.py") and len(path.read_text().splitlines()) < 5:
            continue  # a package's face, or the two-line `python -m` entry
        assert "\nImports: " in docstring, f"{path.relative_to(ROOT)}: no import rule in its docstring"


@pytest.mark.parametrize(
    "broken",
    [
        ("transforms/nst/losses.py", "import apache_beam\n"),
        ("transforms/nst/tiles.py", "from transforms import storage\n"),
        ("transforms/records.py", "import apache_beam as beam\n"),
        ("transforms/results.py", "import fsspec\n"),
        ("transforms/stylize.py", "from pipeline import options\n"),
    ],
)
def test_the_rules_catch_a_wrong_import(broken: tuple[str, str]) -> None:
    where, line = broken
    assert not broken_rules(where, (ROOT / where).read_text())
    assert broken_rules(where, line + (ROOT / where).read_text()), f"{where} with {line.strip()!r} passed"


def test_the_command_lines_help_modules_load_neither_torch_nor_beam() -> None:
    # --help, the quick check of a command line and the Flex Template metadata answer at once:
    # none imports torch or Beam on import.
    code = (
        "import sys\n"
        "import pipeline.flags, pipeline.config, pipeline.template_metadata\n"
        "import transforms.nst.config\n"
        "print(sorted(m for m in ('torch', 'apache_beam') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert result.stdout.strip() == "[]"


def test_the_dofns_and_the_output_contract_load_no_torch() -> None:
    # The engine comes in through the handler (handler.py): the DoFns run with a fake one.
    code = (
        "import sys\n"
        "import transforms.stylize, transforms.results, transforms.outputs, transforms.manifest, transforms.index\n"
        "print('torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == "False"


def test_every_module_is_imported_by_its_path() -> None:
    # An import names the folder it is found in: what editors, type checkers and structure tools
    # need to follow it from a plain checkout (no import hook, no renamed packages).
    import importlib

    for path in modules():
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        if name.endswith("__main__"):
            continue  # running it is the job
        module = importlib.import_module(name)
        assert Path(module.__file__).resolve() == path.resolve(), name
