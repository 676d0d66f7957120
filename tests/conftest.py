"""Shared guard: tests run the installed hook, so the installed copy must be this checkout."""

import filecmp
from pathlib import Path

import pytest
from hypothesis import settings

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


# Deterministic examples and no per-example deadline: CI machines are shared and noisy,
# and a red run must mean a real defect, not an unlucky draw or a slow moment.
settings.register_profile("project", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("project")
