"""tokentop.dirs must give the folders platformdirs gives (it replaces it on the hot start)."""

from __future__ import annotations

from pathlib import Path

import platformdirs
import pytest

from tokentop.dirs import user_dir


@pytest.mark.parametrize("kind", ["cache", "config", "data"])
@pytest.mark.parametrize("xdg", [None, "/srv/x", "relative/ignored"])
def test_same_folders_as_platformdirs(
    kind: str, xdg: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    var = {"cache": "XDG_CACHE_HOME", "config": "XDG_CONFIG_HOME", "data": "XDG_DATA_HOME"}[kind]
    if xdg is None:
        monkeypatch.delenv(var, raising=False)
    else:
        monkeypatch.setenv(var, xdg)
    expected = Path(getattr(platformdirs, f"user_{kind}_dir")("tokentop"))
    assert user_dir(kind) == expected  # type: ignore[arg-type]
