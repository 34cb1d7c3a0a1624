"""Every ``Examples`` section in the package runs as a doctest."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import tilestream

MODULES = sorted(
    name for _, name, _ in pkgutil.walk_packages(tilestream.__path__, prefix="tilestream.")
)


@pytest.mark.parametrize("name", MODULES)
def test_module_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    assert result.failed == 0, f"{result.failed} doctest(s) failed in {name}"


def test_public_api_is_documented() -> None:
    missing = [
        name
        for name in tilestream.__all__
        if not name.startswith("_")
        and not isinstance(getattr(tilestream, name), (int, str))
        and not (getattr(tilestream, name).__doc__ or "").strip()
    ]
    assert not missing, f"public names without a docstring: {missing}"
