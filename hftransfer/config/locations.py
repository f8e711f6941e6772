"""Resolve model and data locations, including files shipped inside Python packages."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

PACKAGE_PREFIX = "pkg:"


def resolve_location(spec: str) -> str:
    """Map `pkg:<package>/<relative path>` to a real path; leave Hub ids and plain paths as they are.

    Recipes use this to name weights and data that ship with a pip package (the offline demo
    model, the SST-2 sample) without hard-coding a site-packages path.
    """
    if not spec.startswith(PACKAGE_PREFIX):
        return spec
    package, _, relative = spec[len(PACKAGE_PREFIX) :].partition("/")
    found = importlib.util.find_spec(package)
    if found is None or not found.submodule_search_locations:
        raise FileNotFoundError(
            f"'{spec}' names the Python package '{package}', which is not installed. "
            f"Install it (pip install {package.replace('_', '-')}) or give a Hub id or local path."
        )
    path = Path(next(iter(found.submodule_search_locations))) / relative
    if not path.exists():
        raise FileNotFoundError(f"'{spec}' resolves to {path}, which does not exist.")
    return str(path)


def looks_like_path(spec: str) -> bool:
    """A local path rather than a Hub id: starts with `.`, `/` or `~`, or has more separators than `org/name`."""
    if spec.startswith((".", "/", "~")) or (os.sep != "/" and os.sep in spec):
        return True
    return spec.count("/") > 1
