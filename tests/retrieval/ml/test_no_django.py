"""The ML library is a plain library: no module of retrieval.ml may import Django.

Every module under ``retrieval/ml/`` (found on disk, so a new one is covered without editing this
test) is imported in a fresh interpreter in which any import of ``django`` fails, and in which
each attempt is recorded: a module that imports Django, even inside a ``try``, is named.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

# Run in a fresh interpreter: blocks and records every import of django, then imports the named
# modules (or every module of a package) one by one and prints what each did, as JSON.
HARNESS = r"""
import importlib, importlib.abc, json, pkgutil, sys

class NoDjango(importlib.abc.MetaPathFinder):
    def __init__(self):
        self.asked = []

    def find_spec(self, name, path=None, target=None):
        if name == "django" or name.startswith("django."):
            self.asked.append(name)
            raise ImportError(f"{name} is not importable in this test")
        return None

blocker = NoDjango()
sys.meta_path.insert(0, blocker)
targets = sys.argv[1:]
if targets == ["--package", "retrieval.ml"]:
    import retrieval.ml
    targets = ["retrieval.ml"] + sorted(info.name for info in pkgutil.walk_packages(retrieval.ml.__path__,
                                                                                    "retrieval.ml."))
report = {}
for name in targets:
    before = len(blocker.asked)
    try:
        importlib.import_module(name)
        error = None
    except ImportError as exc:
        error = str(exc)
    report[name] = {"django": blocker.asked[before:], "error": error}
report = {"modules": report, "django_in_sys_modules": sorted(m for m in sys.modules if m.split(".")[0] == "django")}
print(json.dumps(report))
"""


def import_without_django(*targets: str) -> dict:
    result = subprocess.run([sys.executable, "-c", HARNESS, *targets], capture_output=True, text=True, check=True,
                            cwd=REPO, env={**os.environ, "DJANGO_SETTINGS_MODULE": ""}, timeout=300)
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_no_module_of_the_ml_library_imports_django():
    report = import_without_django("--package", "retrieval.ml")
    on_disk = {f"retrieval.ml.{path.stem}" for path in (REPO / "retrieval" / "ml").glob("*.py")
               if path.stem != "__init__"} | {"retrieval.ml"}
    assert set(report["modules"]) == on_disk  # every module was imported, none skipped
    offending = {name: outcome for name, outcome in report["modules"].items()
                 if outcome["django"] or outcome["error"]}
    assert offending == {}
    assert report["django_in_sys_modules"] == []


def test_the_check_names_a_module_that_imports_django():
    # retrieval.loaders is the Django side (it reads settings and the version rows): the same
    # harness must flag it, or the test above would pass whatever the ML library imported.
    report = import_without_django("retrieval.loaders")
    outcome = report["modules"]["retrieval.loaders"]
    assert outcome["django"] and outcome["django"][0].startswith("django")
    assert "not importable in this test" in outcome["error"]
