"""The README's two opening commands work verbatim, in order, on a fresh machine, and CI runs them.

(1) installs torch and pgolf and runs the demo; (2) is the test command, which CI extracts from
the block after ``<!-- test-command -->``. The second must install everything the tests import
that the first leaves out (a fresh machine once failed with ``No module named pytest``).
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def _requirements(key: str) -> set[str]:
    """Distribution names in pyproject.toml's ``key = [...]`` list (tomllib needs 3.11)."""
    text = (REPO / "pyproject.toml").read_text()
    found = re.search(rf"^{re.escape(key)} = \[(.*?)\]", text, re.S | re.M)
    assert found, f"pyproject.toml has no {key} = [...] list"
    return {_name(r) for r in re.findall(r'"([^"]+)"', found.group(1))}


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```$", text, re.S | re.M)


def _first_command() -> str:
    return _bash_blocks(README.read_text())[0].strip()


def _test_command() -> str:
    after_marker = README.read_text().split("<!-- test-command -->", 1)[1]
    return _bash_blocks(after_marker)[0].strip()


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _closure(names: set[str]) -> set[str]:
    """The distributions ``names`` pull in (their requirements, recursively; extras left out)."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r]
    return seen


def _test_imports() -> set[str]:
    """Top-level modules that tests/*.py import anywhere (module level or inside functions)."""
    found = set()
    for path in (REPO / "tests").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    local = {p.stem for p in (REPO / "tests").glob("*.py")} | {"pgolf"}
    return found - set(sys.stdlib_module_names) - local


def test_first_command_installs_pinned_torch_then_runs_the_pipeline():
    first = _first_command()
    assert first.endswith("pgolf run"), f"README's first command is {first!r}"
    # torch (CPU build) is pinned as in CI, and installed before the package.
    ci_pin = re.search(r"torch==[\w.]+", (REPO / ".ci" / "run").read_text()).group(0)
    assert ci_pin in first
    assert first.index(ci_pin) < first.index("pip install -e .")


def test_test_command_installs_the_test_extra_before_running_pytest():
    command = _test_command()
    install = command.index("pip install -e '.[test]'")
    assert install < command.index("pytest"), command
    assert "&&" in command[install:], "pytest must not run when the install failed"
    assert {"pytest", "pytest-xdist"} <= _requirements("test")  # -n 2 is pytest-xdist's option
    assert "-n 2" in command


def test_everything_the_tests_import_is_installed_by_the_two_commands():
    installed = _closure(_requirements("dependencies") | _requirements("test"))
    owners = md.packages_distributions()
    missing = {}
    for module in sorted(_test_imports()):
        dists = {d.lower().replace("_", "-") for d in owners.get(module, [])}
        if not dists & installed:
            missing[module] = sorted(dists) or ["not installed here either"]
    assert not missing, (
        f"tests import {missing} but neither README command installs it; add it to the "
        "test extra in pyproject.toml"
    )


def test_ci_extracts_the_readme_test_command():
    script = (REPO / ".ci" / "run").read_text()
    found = re.search(r"^test_cmd=\$\((.*)\)$", script, re.M)
    assert found, ".ci/run no longer defines test_cmd=$(...)"
    proc = subprocess.run(
        ["bash", "-c", found.group(1)], cwd=REPO, capture_output=True, text=True, check=True
    )
    command = proc.stdout.strip()
    assert command and "pytest" in command and "```" not in command
    assert README.read_text().count("<!-- test-command -->") == 1
    assert command == _test_command()
