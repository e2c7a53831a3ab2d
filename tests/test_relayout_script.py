"""scripts/relayout_imports.py: branches started before the layout change get their imports rewritten to modules
that exist, and names that moved to strata.modelfolder are imported from there."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "relayout_imports.py"


def _rewrite():
    spec = importlib.util.spec_from_file_location("relayout_imports", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.rewrite


def test_old_imports_become_importable_ones():
    old = ("from strata.build import layers, manifest as mf, merge\n"
           "from strata.build.train import (Job, pick_device,\n    train_level)\n"
           "from strata.build.merge import WEIGHT_SUFFIXES, merge_levels\n"
           "from strata.build.basemodel import resolve_base_model\n"
           'cmd = "python -m strata.build.quantize"  # strata/build/launch.py\n')
    problems: list[str] = []
    new = _rewrite()(old + "from strata.build.fidelity import hf_logits\n", problems)
    assert "strata.build" not in new and "strata/build" not in new
    assert problems == ["strata.export.fidelity.hf_logits was removed: use hf_reference(model_dir, tokens)[0]"]
    namespace: dict = {}
    exec(compile(_rewrite()(old), "<rewritten>", "exec"), namespace)  # every rewritten import resolves
    assert namespace["mf"] is importlib.import_module("strata.runmanifest")
    assert namespace["pick_device"].__module__ == "strata.modelfolder"
    assert namespace["cmd"] == "python -m strata.export.quantize"
