"""The public names of the package: listed, sorted, and all importable."""

from __future__ import annotations

import subprocess
import sys

import pytest

import changeledger


def test_all_is_sorted_and_matches_the_lazy_exports() -> None:
    names = [n for n in changeledger.__all__ if n != "__version__"]
    assert changeledger.__all__ == sorted(changeledger.__all__)
    assert set(names) == set(changeledger._EXPORTS)


@pytest.mark.parametrize("name", changeledger.__all__)
def test_every_public_name_resolves(name: str) -> None:
    value = getattr(changeledger, name)
    if name != "__version__":
        assert value.__name__ == name


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        changeledger.__getattr__("no_such_name")


def test_importing_the_package_and_the_cli_stays_light() -> None:
    code = (
        "import sys, changeledger.cli.main; "
        "print(sorted(m for m in ('sqlalchemy', 'alembic', 'structlog', 'rich') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
