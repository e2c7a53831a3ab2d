"""Rewrite imports from before the issue-21 layout (strata/build/*) to the new homes in strata/data, strata/train,
strata/export, strata/pipeline.py, strata/runmanifest.py and strata/modelfolder.py, for branches started before it:

    python scripts/relayout_imports.py $(git grep -l -e strata.build -e strata/build -- '*.py' '*.md' '*.yaml')

It rewrites dotted and slashed module paths, `from strata.build import a, b`, and names that moved to
strata.modelfolder; it prints what it cannot rewrite (names that were removed) for you to fix by hand."""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOMS = {
    "data": ("pdftext", "pretest", "chunking", "dataset", "datafiles", "archive"),
    "train": ("trainargs", "trainconfig", "batches", "targets", "layers", "resume", "distributed", "launch",
              "trainmeter", "trainrecord", "lossplot", "preflight"),
    "export": ("merge", "convert", "quantize", "fidelity", "gguf_load", "adapter_gguf"),
}
MODULE = {m: f"strata.{room}.{m}" for room, mods in ROOMS.items() for m in mods}
MODULE |= {"train": "strata.train.trainer", "pipeline": "strata.pipeline", "manifest": "strata.runmanifest",
           "basemodel": "strata.modelfolder"}
# (new module, name) -> where the name lives now
NAMES = {("strata.train.trainer", n): "strata.modelfolder" for n in ("pick_device", "attention_kwargs")}
NAMES |= {("strata.export.merge", n): "strata.modelfolder"
          for n in ("WEIGHT_SUFFIXES", "MODEL_FILES", "copy_model_extras", "has_chat_template")}
NAMES |= {("strata.train.layers", n): "strata.modelfolder"
          for n in ("fingerprint", "read_summary", "SUMMARY", "level_dir", "load_base_with_levels")}
REMOVED = {("strata.export.quantize", "temp_beside"): "use strata.files.staged_path",
           ("strata.export.fidelity", "hf_logits"): "use hf_reference(model_dir, tokens)[0]",
           ("strata.runmanifest", "combined"): "use value_identity",
           ("strata.export.merge", "_swap_in"): "use strata.files.staged_path(out, directory=True)"}
DOTTED = re.compile(r"strata([./])build\1(\w+)")
FROM_PACKAGE = re.compile(r"^([ \t]*)from strata\.build import ([\w, ]+?)([ \t]*(#.*)?)$", re.M)
FROM_MODULE = re.compile(r"^([ \t]*)from (strata\.[\w.]+) import (\([^)]*\)|[^\n#]*?)([ \t]*(#.*)?)$", re.M)


def _from_package(match: re.Match) -> str:
    """`from strata.build import a, b as c` -> one import per new parent package."""
    indent, tail = match.group(1), match.group(3) or ""
    by_parent: dict[str, list[str]] = {}
    for name in (n.strip() for n in match.group(2).split(",")):
        module, _, alias = name.partition(" as ")
        alias = alias or module
        parent, _, leaf = MODULE[module].rpartition(".")
        by_parent.setdefault(parent, []).append(leaf + (f" as {alias}" if leaf != alias else ""))
    lines = [f"{indent}from {parent} import {', '.join(leaves)}" for parent, leaves in sorted(by_parent.items())]
    lines[0] += tail
    return "\n".join(lines)


def _moved_names(match: re.Match, problems: list[str]) -> str:
    """`from M import a, b` where some names now live elsewhere -> one import per module."""
    indent, module, names, tail = match.group(1), match.group(2), match.group(3), match.group(4) or ""
    parts = [n.strip() for n in names.strip("()").replace("\n", " ").split(",") if n.strip()]
    homes: dict[str, list[str]] = {}
    for part in parts:
        name = part.split(" as ")[0].strip()
        if (module, name) in REMOVED:
            problems.append(f"{module}.{name} was removed: {REMOVED[module, name]}")
        homes.setdefault(NAMES.get((module, name), module), []).append(part)
    if list(homes) == [module]:
        return match.group(0)
    return "\n".join(f"{indent}from {home} import {', '.join(sorted(names))}" + (tail if n == 0 else "")
                     for n, (home, names) in enumerate(sorted(homes.items())))


def rewrite(text: str, problems: list[str] | None = None) -> str:
    """The text with every old module path and moved name rewritten; removed names are added to `problems`."""
    problems = [] if problems is None else problems

    def dotted(match: re.Match) -> str:
        new = MODULE.get(match.group(2))
        if new is None:
            return match.group(0)
        return new if match.group(1) == "." else new.replace(".", "/")

    text = DOTTED.sub(dotted, FROM_PACKAGE.sub(_from_package, text))
    return FROM_MODULE.sub(lambda m: _moved_names(m, problems), text)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        path = Path(arg)
        found: list[str] = []
        old = path.read_text(encoding="utf-8")
        new = rewrite(old, found)
        if new != old:
            path.write_text(new, encoding="utf-8")
            print(f"rewrote {path}")
        for problem in found:
            print(f"{path}: {problem}")
