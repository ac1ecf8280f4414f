"""The README's settings table names every environment variable the settings read."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented():
    settings_src = (ROOT / "hcapadmin" / "settings.py").read_text()
    names = set(re.findall(r'env\.[a-z_]+\(\s*"([A-Z][A-Z0-9_]+)"', settings_src))
    assert len(names) > 40  # the pattern still matches how settings.py reads variables
    readme = (ROOT / "README.md").read_text()
    documented = set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)`", readme, flags=re.M))
    missing = sorted(names - documented)
    assert not missing, f"add these settings to the README table: {missing}"
