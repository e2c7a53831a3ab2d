"""The package layout's import rules, read from the source with ast: the build stage's rooms (data, train, export)
import each other only through the shared modules, and the serving side stays free of the training stack."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE_ROOT = Path(__file__).resolve().parents[1]  # the folder holding strata/
ROOMS = ("strata.data", "strata.train", "strata.export")
# Everything outside the three rooms (strata.modelfolder, strata.files, strata.pipeline, settings, llamacpp, ...) is
# no room: any room may use it. These two hand-offs from train to export are the only ones, each for a reason:
HANDOFFS = {
    # a trained adapter dir is complete only with its adapter.gguf, written before the summary that marks it done
    ("strata.train.trainrecord", "strata.export.adapter_gguf"),
    # likewise a soft prompt dir is complete only with its softprompt.gguf, which it writes once llama.cpp, given the
    # trained matrix as an embedding batch, has matched HF PEFT's logits
    ("strata.train.softprompt", "strata.export.softprompt_gguf"),
    # the pre-flight asks llama.cpp itself whether it converts and loads the base's vocabulary, before training
    ("strata.train.preflight", "strata.export.adapter_gguf"),
    ("strata.train.preflight", "strata.export.gguf_load"),
}
TRAINING_STACK = ("torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes", "datasets")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """(line, module) for every import in the file, top level or inside functions: `from pkg import name` counts
    as pkg and pkg.name (name may be a module), relative imports are resolved against the file's package."""
    here = module_name(path, root).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found += [(node.lineno, base)] + [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def room_of(module: str) -> str | None:
    return next((room for room in ROOMS if module == room or module.startswith(room + ".")), None)


def sources(root: Path, *packages: str) -> list[Path]:
    return sorted(p for name in packages for p in (root / name.replace(".", "/")).rglob("*.py"))


def cross_imports(root: Path) -> list[str]:
    """`file:line imports module` for each import from one room into another that is not a declared hand-off."""
    bad = []
    for path in sources(root, *ROOMS):
        mine = module_name(path, root)
        for line, module in imports(path, root):
            theirs = room_of(module)
            # a hand-off covers its module, what is imported from it, and the packages above it
            handed = any(mine == a and (module.startswith(b + ".") or b == module or b.startswith(module + "."))
                         for a, b in HANDOFFS)
            if theirs and theirs != room_of(mine) and not handed:
                bad.append(f"{path.relative_to(root)}:{line} imports {module}")
    return bad


def stack_imports(root: Path, package: str) -> list[str]:
    """Imports of the training stack, the build stage's rooms or the pipeline from `package`."""
    return [f"{path.relative_to(root)}:{line} imports {module}" for path in sources(root, package)
            for line, module in imports(path, root)
            if module.split(".")[0] in TRAINING_STACK or room_of(module) or module.split(".")[:2] == ["strata", "pipeline"]]


def test_no_room_imports_another_room():
    assert cross_imports(PACKAGE_ROOT) == [], (
        "data, train and export share code only through strata/modelfolder.py, strata/files.py or strata/pipeline.py "
        "(or another module outside the three); move what both need there")


def test_serve_never_imports_the_training_stack_or_the_build_stage():
    assert stack_imports(PACKAGE_ROOT, "strata.serve") == [], (
        "strata/serve runs on the CPU image, which has no torch/transformers/peft and no build stage")


def test_the_walk_reports_new_cross_imports_and_stack_imports(tmp_path: Path):
    """Both rules can fail: imports inside functions, relative ones and `from pkg import module` are all seen."""
    (tmp_path / "strata" / "train").mkdir(parents=True)
    (tmp_path / "strata" / "serve").mkdir()
    (tmp_path / "strata" / "train" / "x.py").write_text(
        "from strata.files import now_iso\nfrom strata.train import layers\n"
        "def f():\n    from strata.export.merge import merge_levels\n    from ..data import dataset\n")
    (tmp_path / "strata" / "train" / "trainrecord.py").write_text("from strata.export import adapter_gguf\n")
    (tmp_path / "strata" / "serve" / "y.py").write_text("import torch.nn\nfrom strata import pipeline\n"
                                                        "from strata.serve import app\n")
    assert cross_imports(tmp_path) == ["strata/train/x.py:4 imports strata.export.merge",
                                       "strata/train/x.py:4 imports strata.export.merge.merge_levels",
                                       "strata/train/x.py:5 imports strata.data",
                                       "strata/train/x.py:5 imports strata.data.dataset"]
    assert stack_imports(tmp_path, "strata.serve") == ["strata/serve/y.py:1 imports torch.nn",
                                                       "strata/serve/y.py:2 imports strata.pipeline"]


def test_no_folder_named_build_in_the_package():
    assert [p for p in (PACKAGE_ROOT / "strata").rglob("build") if p.is_dir()] == []
