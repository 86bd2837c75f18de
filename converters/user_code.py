"""Import the user's own code: a FILE.py or an importable module (a torch factory, Keras custom objects).

This code is trusted by design (the user names it on the command line) and runs
on import; the only job here is to turn every way it can fail into one clear line.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import sys

from inspector.errors import InspectorError


def import_user_module(where: str, what: str):
    """``where`` is a path to a ``.py`` file or a dotted module name; ``what`` names it in messages."""
    if where.endswith(".py") or os.sep in where:
        if not os.path.isfile(where):
            raise InspectorError(f"{what} file not found: {where}")
        module_name = "_inspector_user_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(where))[0])
        spec = importlib.util.spec_from_file_location(module_name, where)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # pickling and dataclasses look their module up here
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(module_name, None)
            raise InspectorError(f"importing {where} failed ({exc.__class__.__name__}: {exc})") from None
        return module
    try:
        return importlib.import_module(where)
    except ImportError as exc:
        raise InspectorError(f"cannot import {what} module '{where}' ({exc}); check the name and PYTHONPATH") from None
