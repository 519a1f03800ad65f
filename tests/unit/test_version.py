"""`streamserve --version` names the version the package was built as."""

import tomllib
from pathlib import Path

from click.testing import CliRunner

from streamserve.cli import main

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_version_is_the_packages() -> None:
    result = CliRunner().invoke(main, ["--version"])
    version = tomllib.loads(PYPROJECT.read_text())["project"]["version"]
    assert result.exit_code == 0
    assert result.output.strip() == f"streamserve, version {version}"
