"""The layers of the code base only import downwards (README, Layout):

- the core (``cluster/`` but ``cluster/launch/``) imports no role package and not the launcher;
- the role packages (``gateway/``, ``workers/``, ``dummy/``) import the core only, not each other;
- only the launcher (``cluster/launch/``) starts roles, through its role table.

Imports are read from the source (module level and inside functions alike), so a lazy import that
points back up is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cluster.launch.roles import ROLES, START_ORDER, entry_point

ROOT = Path(__file__).resolve().parent.parent
ROLE_PACKAGES = ("gateway", "workers", "dummy")


def _imports(path: Path) -> set[str]:
    """Every module `path` imports (absolute names; relative imports are not used here)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _package_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def _violations(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    found = []
    for path in files:
        for name in sorted(_imports(path)):
            if any(name == bad or name.startswith(bad + ".") for bad in forbidden):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


def test_the_core_imports_no_role_and_not_the_launcher() -> None:
    core = [
        p for p in _package_files("cluster")
        if "launch" not in p.relative_to(ROOT).parts
        and p.name != "__main__.py"  # `python -m cluster` is the launcher's door
    ]  # fmt: skip
    assert len(core) > 20  # the walk found the core
    assert _violations(core, (*ROLE_PACKAGES, "cluster.launch")) == []


@pytest.mark.parametrize("package", ROLE_PACKAGES)
def test_a_role_package_imports_the_core_only(package: str) -> None:
    others = tuple(p for p in ROLE_PACKAGES if p != package)
    files = _package_files(package)
    assert files
    assert _violations(files, (*others, "cluster.launch")) == []


def test_the_checker_sees_lazy_imports(tmp_path: Path) -> None:
    """The check above would catch the kind of import it exists for."""
    module = tmp_path / "lazy.py"
    module.write_text("def f():\n    from gateway import server\n    return server\n")
    assert "gateway.server" in _imports(module)


def test_every_role_in_the_table_resolves_to_a_serve_function() -> None:
    assert set(START_ORDER) == set(ROLES)
    for role in ROLES:
        serve = entry_point(role)
        assert callable(serve), role
        assert serve.__name__ == "serve", role


def test_a_plain_install_holds_every_package_and_data_file(tmp_path: Path) -> None:
    """A wheel (what `pip install .` and a container image get) holds every module and data file
    of the source tree, not only the top-level packages an editable install happens to find."""
    import shutil
    import subprocess
    import sys
    import zipfile

    source = tmp_path / "source"  # a copy: a build leaves build/ and *.egg-info behind
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", "build", ".*_cache"))  # fmt: skip
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=600,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = tmp_path.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    wanted = {
        p.relative_to(ROOT).as_posix()
        for top in ("cluster", "gateway", "workers", "dummy", "sql")
        for p in (ROOT / top).rglob("*")
        if p.is_file() and p.suffix in {".py", ".sql", ".html", ".js", ".css"}
        and "__pycache__" not in p.parts
    }
    assert wanted - names == set()
