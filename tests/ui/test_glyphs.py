"""Every character the web UI shows beyond ASCII has a glyph in DejaVu Sans, the font a Linux
machine falls back to when it has few others (CI installs only it): a character without one is
drawn as an empty box. The graph's mark of a sublattice node was one (U+29C9), on every page."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

UI = Path(__file__).resolve().parents[2] / "dispatcher" / "ui"


def _shown() -> set[str]:
    files = [*UI.glob("static/*.js"), *UI.glob("static/*.css"), *UI.glob("templates/**/*.html"),
             *UI.glob("*.py")]
    assert len(files) > 10, files  # the UI's own files, not the vendored ones
    return {ch for p in files for ch in p.read_text(encoding="utf-8") if ord(ch) > 127}


def _fonts_with(ch: str) -> str:
    return subprocess.run(["fc-list", f":charset={ord(ch):x}", "family"], capture_output=True,
                          text=True, check=True).stdout


def test_every_character_the_ui_shows_has_a_glyph_in_dejavu_sans() -> None:
    if shutil.which("fc-list") is None or "DejaVu Sans" not in _fonts_with("a"):
        pytest.skip("fontconfig and DejaVu Sans are not installed (.ci/run installs them)")
    shown = _shown()
    assert "·" in shown  # (read the files it should)
    missing = [f"U+{ord(ch):04X} {ch}" for ch in sorted(shown) if "DejaVu Sans" not in _fonts_with(ch)]
    assert not missing, f"no glyph in DejaVu Sans (drawn as an empty box): {missing}"
