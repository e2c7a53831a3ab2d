"""The preset loader: defaults + YAML + overrides, unknown keys and wrong types rejected with the key named."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from strata.errors import StrataError
from strata.presets import load_preset


@dataclass(frozen=True)
class Demo:
    r: int = 8
    lr: float = 1e-4
    fmt: Literal["text", "chat"] = "text"
    targets: list[str] = field(default_factory=lambda: ["q_proj"])
    topic: str | None = None


def write(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


def test_yaml_overrides_defaults_and_overrides_win(tmp_path):
    p = load_preset(Demo, write(tmp_path, "r: 16\nfmt: chat\ntargets: [q_proj, v_proj]\n"), lr=None, topic="ASC_Leases")
    assert p == Demo(r=16, lr=1e-4, fmt="chat", targets=["q_proj", "v_proj"], topic="ASC_Leases")


def test_empty_file_is_all_defaults(tmp_path):
    assert load_preset(Demo, write(tmp_path, "")) == Demo()


@pytest.mark.parametrize("text, needle", [
    ("rank: 4\n", "unknown key(s) ['rank']"),
    ("r: four\n", "r must be int"),
    ("r: true\n", "r must be int"),
    ("fmt: json\n", "fmt must be one of 'text', 'chat'"),
    ("targets: q_proj\n", "targets must be"),
    ("- 1\n- 2\n", "must be a mapping"),
    ("r: [1\n", "not valid YAML"),
])
def test_bad_presets_name_the_problem(tmp_path, text, needle):
    with pytest.raises(StrataError, match="p.yaml") as info:
        load_preset(Demo, write(tmp_path, text))
    assert needle in str(info.value)


def test_missing_preset_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("STRATA_PRESETS", str(tmp_path))
    with pytest.raises(StrataError, match="not found"):
        load_preset(Demo, "levels/nope")
