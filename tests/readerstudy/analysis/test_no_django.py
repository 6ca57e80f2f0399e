"""The analysis is a plain library: importing it (the viewing analysis included) must not pull in Django."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_the_analysis_package_never_imports_django():
    code = ("import sys, readerstudy.analysis.report, readerstudy.analysis.writers, readerstudy.analysis.responses, "
            "readerstudy.analysis.viewing; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).resolve().parents[3], env={**os.environ, "DJANGO_SETTINGS_MODULE": ""})
    assert result.stdout.strip() == "[]"
