"""Rewrite `strata.build.*` imports to the issue-21 layout (data/train/export/pipeline): python scripts/relayout_imports.py FILE..."""

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
MOVES = {f"strata.build.{m}": f"strata.{room}.{m}" for room, mods in ROOMS.items() for m in mods}
MOVES |= {"strata.build.train": "strata.train.trainer", "strata.build.pipeline": "strata.pipeline",
          "strata.build.manifest": "strata.runmanifest", "strata.build.basemodel": "strata.modelfolder"}
MODULE = {old.rsplit(".", 1)[1]: new for old, new in MOVES.items()}
DOTTED = re.compile(r"strata([./])build\1(\w+)")
FROM_PACKAGE = re.compile(r"^([ \t]*)from strata\.build import ([\w, ]+?)([ \t]*(#.*)?)$", re.M)


def rewrite(text: str) -> str:
    """`from strata.build import a, b` -> one import per new home; dotted and slashed paths -> their new home."""

    def package(match: re.Match) -> str:
        indent, names, tail = match.group(1), [n.strip() for n in match.group(2).split(",")], match.group(3) or ""
        by_parent: dict[str, list[str]] = {}
        for name in names:
            module, _, alias = name.partition(" as ")
            alias = alias or module
            parent, _, leaf = MODULE[module].rpartition(".")
            by_parent.setdefault(parent, []).append(leaf + (f" as {alias}" if leaf != alias else ""))
        lines = [f"{indent}from {parent} import {', '.join(leaves)}" for parent, leaves in sorted(by_parent.items())]
        lines[0] += tail
        return "\n".join(lines)

    def dotted(match: re.Match) -> str:
        sep, name = match.group(1), match.group(2)
        new = MODULE.get(name)
        if new is None:
            return match.group(0)
        return new if sep == "." else new.replace(".", "/")

    text = FROM_PACKAGE.sub(package, text)
    return DOTTED.sub(dotted, text)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        path = Path(arg)
        old = path.read_text(encoding="utf-8")
        new = rewrite(old)
        if new != old:
            path.write_text(new, encoding="utf-8")
            print(f"rewrote {path}")
