"""Shared guard: tests run the installed hook, so the installed copy must be this checkout."""

import filecmp
from pathlib import Path

import pytest

import pgpool_anycast_hook

CHECKOUT = Path(__file__).resolve().parent.parent / "pgpool_anycast_hook"


def pytest_sessionstart(session: pytest.Session) -> None:
    installed = Path(pgpool_anycast_hook.__file__).resolve().parent
    if installed == CHECKOUT:
        return
    names = sorted(p.name for p in CHECKOUT.glob("*.py"))
    _match, mismatch, errors = filecmp.cmpfiles(CHECKOUT, installed, names, shallow=False)
    if mismatch or errors:
        raise pytest.UsageError(
            f"the installed package at {installed} differs from this checkout "
            f"({', '.join(mismatch + errors)}); run `make test` (or scripts/setup-dev.sh) first"
        )
