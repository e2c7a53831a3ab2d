"""`strata release publish`: pack MODEL_PATH, its adapters and QA results; upload the files, then the manifest."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from strata.errors import StrataError
from strata.files import now_iso, read_json_or_none, sha256_file
from strata.release import tags
from strata.release.manifest import (
    FileEntry,
    Manifest,
    blob_key,
    check_name,
    check_version,
    default_version,
    manifest_key,
)
from strata.release.progress import transfers
from strata.release.stores import Store
from strata.settings import Settings

ADAPTER_FILES = {"adapter.gguf": "adapter", "adapter_config.json": "adapter-config",
                 "training_summary.json": "training-summary", "loss.png": "loss-plot", "loss.jsonl": "loss-log"}
SOFT_PROMPT_FILES = {"softprompt.gguf": "soft-prompt", "adapter_config.json": "adapter-config",
                     "training_summary.json": "training-summary", "loss.png": "loss-plot", "loss.jsonl": "loss-log"}
SKIPPED = frozenset({"checkpoints"})
MERGE_RECORD = "merge_record.json"
_QUANT_SUFFIX = re.compile(r"\.(?:I?Q\d\w*|F16|F32|BF16)$", re.IGNORECASE)


@dataclass(frozen=True)
class Source:
    """A local file and the path/role it gets inside the release."""

    path: str
    role: str
    local: Path


def default_name(model: Path, env: dict[str, str] | None = None) -> str:
    """MODEL_NAME, else the GGUF's stem without its quant suffix (mistral-7b.Q4_K_M.gguf -> mistral-7b)."""
    name = (os.environ if env is None else env).get("MODEL_NAME", "").strip()
    return name or _QUANT_SUFFIX.sub("", model.name.removesuffix(".gguf"))


def publish(settings: Settings, store: Store, *, name: str | None = None, version: str | None = None,
            with_peft: bool = False, adapters: Sequence[str] = (), qa_dir: Path | None = None, no_qa: bool = False,
            progress: bool = True, echo: Callable[[str], None] = print) -> tuple[Manifest, bool]:
    """Publish one release; returns (manifest, created). An existing version with identical files is a no-op
    (created False); one with different files is refused: versions are immutable."""
    model = settings.model_path
    if not model.is_file():
        raise StrataError(f"no model to publish: {model} does not exist. Build it with `strata build train_all` "
                          "(or `strata build convert`), or set MODEL_PATH.")
    name = check_name(name or default_name(model), "release name")
    version = check_version(version or default_version())
    sources, adapter_meta = _adapter_sources(settings.peft, with_peft, adapters)
    soft_sources, soft_meta = _soft_prompt_sources(settings.workspace / "soft_prompts", with_peft)
    sources = _model_sources(model) + sources + soft_sources + _evidence_sources(settings)
    fidelity = _fidelity(model)
    qa_sources, qa = ([], None) if no_qa else _qa_sources(settings, model, qa_dir)
    sources += qa_sources
    base_fp = _base_fingerprint(settings, fidelity)
    _check_adapter_bases(adapter_meta + soft_meta, base_fp)
    store.ensure()
    existing = store.read(manifest_key(name, version))
    if existing is not None:  # fail fast, before hashing gigabytes, when the file list alone differs
        _refuse_other_files(store, name, version, existing, {(s.path, s.local.stat().st_size) for s in sources})
    files = _hash(sources, progress)
    manifest = Manifest(
        name=name, version=version, created=now_iso(), strata_version=_strata_version(), base_fingerprint=base_fp,
        model=f"model/{model.name}", files=files, adapters=adapter_meta, soft_prompts=soft_meta, qa=qa,
        gate=_gate_matrix(settings),
        fidelity={k: fidelity.get(k) for k in ("quant", "relative_error", "top1_agreement", "perplexity_ratio",
                                               "passed")} if fidelity else None)
    if existing is not None:
        return _same_or_refuse(store, manifest, existing, echo), False
    _upload(store, name, sources, files, progress, echo)
    if not store.create(manifest_key(name, version), manifest.to_bytes()):  # another publisher won the race
        return _same_or_refuse(store, manifest, store.read(manifest_key(name, version)) or b"", echo), False
    if store.read(manifest_key(name, version)) != manifest.to_bytes():
        raise StrataError(f"the store {store.url} overwrote {name}@{version} with another publisher's manifest: it "
                          "ignores conditional writes (If-None-Match), so concurrent publishes are unsafe there.")
    tags.set_tag(store, name, tags.LATEST, version)
    echo(f"published {name}@{version} to {store.url}: {len(files)} files, {manifest.total_bytes / 1e6:.1f} MB "
         f"({len(adapter_meta)} adapters, {len(soft_meta)} soft prompts, QA {manifest.verdict}); "
         f"{tags.LATEST} -> {version}")
    return manifest, True


def _refuse_other_files(store: Store, name: str, version: str, existing: bytes, files: set[tuple[str, int]]) -> None:
    current = Manifest.from_bytes(existing, f"{store.url}/{manifest_key(name, version)}")
    changed = sorted({p for p, _ in files ^ {(f.path, f.size) for f in current.files}})
    if changed:
        raise _immutable(f"{name}@{version}", store, changed)


def _immutable(ref: str, store: Store, changed: list[str]) -> StrataError:
    return StrataError(f"{ref} is already published in {store.url} with other files ({', '.join(changed[:3])}"
                       f"{' ...' if len(changed) > 3 else ''} differ); versions are immutable: publish under a new "
                       "--version.")


def _same_or_refuse(store: Store, manifest: Manifest, existing: bytes, echo: Callable[[str], None]) -> Manifest:
    ref = f"{manifest.name}@{manifest.version}"
    current = Manifest.from_bytes(existing, f"{store.url}/{manifest_key(manifest.name, manifest.version)}")
    changed = manifest.differences(current)
    if changed:
        raise _immutable(ref, store, changed)
    echo(f"{ref} is already published in {store.url} with identical files; nothing to do.")
    return current


def _model_sources(model: Path) -> list[Source]:
    sources = [Source(f"model/{model.name}", "model", model)]
    record = _fidelity_path(model)
    if record.is_file():
        sources.append(Source(f"model/{record.name}", "fidelity", record))
    return sources


def _evidence_sources(settings: Settings) -> list[Source]:
    """The workspace's evidence index (role `index`) and adapter bindings (role `bindings`), when present."""
    found = [("index/index.sqlite", "index", settings.workspace / "index.sqlite"),
             ("bindings.json", "bindings", settings.workspace / "bindings.json")]
    return [Source(path, role, local) for path, role, local in found if local.is_file()]


def _fidelity_path(model: Path) -> Path:
    return model.with_name(model.name.removesuffix(".gguf") + ".fidelity.json")


def _fidelity(model: Path) -> dict[str, Any] | None:
    return read_json_or_none(_fidelity_path(model))




def _adapter_sources(peft: Path, with_peft: bool, only: Sequence[str]) -> tuple[list[Source], list[dict[str, Any]]]:
    from strata.modelfolder import read_summary
    from strata.qa.plan import discover_layers  # every dir holding adapter.gguf; merged/, checkpoints/ skipped

    dirs = discover_layers(peft)
    by_name = {d.relative_to(peft).as_posix(): d for d in dirs}
    unknown = sorted(set(only) - by_name.keys())
    if unknown:
        raise StrataError(f"--adapter {', '.join(unknown)}: no such adapter under {peft} (adapters there: "
                          f"{', '.join(by_name) or 'none'}).")
    sources: list[Source] = []
    meta: list[dict[str, Any]] = []
    for rel, folder in by_name.items():
        if only and rel not in only:
            continue
        for file in _adapter_files(folder, with_peft):
            inner = file.relative_to(folder).as_posix()
            sources.append(Source(f"peft/{rel}/{inner}", ADAPTER_FILES.get(inner, "peft"), file))
        summary = read_summary(folder) or {}
        meta.append({"name": rel, "path": f"peft/{rel}", "level": summary.get("level"), "topic": summary.get("topic"),
                     "peft": summary.get("peft"), "base_fingerprint": summary.get("base_fingerprint"),
                     "levels_below": [Path(d["path"]).name for d in summary.get("levels_below") or []
                                      if isinstance(d, dict) and d.get("path")],
                     "gate": _gate_verdict(summary)})
    return sources, meta


def _soft_prompt_sources(folder: Path, with_peft: bool) -> tuple[list[Source], list[dict[str, Any]]]:
    """Every soft prompt under WORKSPACE/soft_prompts/ that holds softprompt.gguf (one that failed its fidelity
    check holds none), as soft_prompts/NAME/ files of the release."""
    from strata.modelfolder import read_summary
    from strata.qa.plan import discover_soft_prompts

    sources: list[Source] = []
    meta: list[dict[str, Any]] = []
    for soft in discover_soft_prompts(folder):
        for file in _adapter_files(soft, with_peft, SOFT_PROMPT_FILES):
            inner = file.relative_to(soft).as_posix()
            sources.append(Source(f"soft_prompts/{soft.name}/{inner}", SOFT_PROMPT_FILES.get(inner, "peft"), file))
        summary = read_summary(soft) or {}
        meta.append({"name": soft.name, "path": f"soft_prompts/{soft.name}", "kind": "soft_prompt",
                     "n_virtual_tokens": summary.get("n_virtual_tokens"),
                     "base_fingerprint": summary.get("base_fingerprint"),
                     "fidelity": {k: (summary.get("fidelity") or {}).get(k)
                                  for k in ("relative_error", "top1_agreement", "passed")}})
    return sources, meta


def _gate_verdict(summary: dict[str, Any]) -> dict[str, Any] | None:
    """The base-vs-layer gate's verdict a topic layer's summary carries (None: never gated)."""
    gate = summary.get("gate")
    if not isinstance(gate, dict):
        return None
    return {k: gate.get(k) for k in ("passed", "topic", "own_f1", "base_f1", "metric", "gain", "general_ppl_ratio",
                                     "general_drift", "reasons", "diagnosis", "run_dir")}


def _adapter_files(folder: Path, with_peft: bool, kept: dict[str, str] = ADAPTER_FILES) -> Iterable[Path]:
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        parts = file.relative_to(folder).parts
        if any(part.startswith(".") or part in SKIPPED for part in parts):
            continue
        if with_peft or (len(parts) == 1 and file.name in kept):
            yield file


def latest_qa(settings: Settings, model: Path) -> Path | None:
    """The newest runs/qa-*/ whose results.json is newer than the model and was run on it (or on a server)."""
    made = model.stat().st_mtime
    runs = sorted(settings.runs.glob("qa-*/results.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for results in runs:
        if results.stat().st_mtime < made:
            break
        target = (read_json_or_none(results) or {}).get("target") or {}
        tested = target.get("model")
        if target.get("server") or (tested and Path(tested).absolute() == model.absolute()):
            return results.parent
    return None


def _qa_sources(settings: Settings, model: Path, qa_dir: Path | None) -> tuple[list[Source], dict[str, Any] | None]:
    folder = Path(qa_dir) if qa_dir else latest_qa(settings, model)
    if folder is None:
        return [], None
    results = read_json_or_none(folder / "results.json")
    if results is None:
        raise StrataError(f"--qa {folder}: no readable results.json there; pass a runs/qa-<timestamp> folder "
                          "written by `strata qa`.")
    sources = [Source("qa/results.json", "qa-results", folder / "results.json")]
    for extra in ("report.html", "report.md", *sorted(p.relative_to(folder).as_posix()
                                                      for p in (folder / "plots").glob("*.png"))):
        if (folder / extra).is_file():
            sources.append(Source(f"qa/{extra}", "qa-report", folder / extra))
    gates = [{k: g.get(k) for k in ("spec", "passed", "message", "layer", "value")} for g in results.get("gates", [])]
    qa = {"run": folder.name, "finished": results.get("finished"),
          "prompt_set": (results.get("prompt_set") or {}).get("name"), "gates": gates,
          "passed": all(g["passed"] for g in gates),
          "layers": [{"name": layer.get("name"), "status": layer.get("status")} for layer in results.get("layers", [])]}
    return sources, qa


def _gate_matrix(settings: Settings) -> dict[str, Any] | None:
    """The last gate's per-topic matrix, forgetting numbers and verdicts (peft/gate.json), if the build ran one."""
    record = read_json_or_none(settings.peft / "gate.json")
    return {k: record.get(k) for k in ("topics", "matrix", "general", "verdicts", "passed", "preset", "created")} \
        if record else None


def _base_fingerprint(settings: Settings, fidelity: dict[str, Any] | None) -> str | None:
    """Fingerprint of the HF base the GGUF was built from: its merge record's base, else the HF dir converted."""
    candidates = [Path(fidelity["hf_dir"])] if fidelity and fidelity.get("hf_dir") else []
    candidates += [settings.merged, Path(settings.base_model)]
    for folder in candidates:
        record = read_json_or_none(folder / MERGE_RECORD)
        if record and record.get("base_fingerprint"):
            return record["base_fingerprint"]
        if (folder / "config.json").is_file():
            from strata.modelfolder import fingerprint  # plain hashing; the build pod is where publish runs

            return fingerprint(folder)
    return None


def _check_adapter_bases(adapters: list[dict[str, Any]], base_fp: str | None) -> None:
    for adapter in adapters:
        expected = adapter.get("base_fingerprint")
        if base_fp and expected and expected != base_fp:
            raise StrataError(f"adapter {adapter['path']} was trained on base fingerprint {expected}, but the model "
                              f"was built from base {base_fp}; retrain it, or publish the others with --adapter NAME.")


def _hash(sources: list[Source], progress: bool) -> list[FileEntry]:
    with transfers(progress) as start:
        return [FileEntry(s.path, s.role, s.local.stat().st_size,
                          sha256_file(s.local, progress=start(f"hash {s.path}", s.local.stat().st_size)))
                for s in sources]


def _upload(store: Store, name: str, sources: list[Source], files: list[FileEntry], progress: bool,
            echo: Callable[[str], None]) -> None:
    """Upload every file the store does not hold yet (blobs are keyed by sha256, so a present one is the same)."""
    todo = []
    for source, entry in zip(sources, files):
        if store.size(blob_key(name, entry.sha256)) == entry.size:
            continue
        todo.append((source, entry))
    skipped = len({f.sha256 for f in files}) - len({e.sha256 for _, e in todo})
    if skipped:
        echo(f"{skipped} file(s) already in {store.url} (same sha256); not uploading them again")
    done: set[str] = set()
    with transfers(progress) as start:
        for source, entry in todo:
            if entry.sha256 in done:
                continue
            store.upload(blob_key(name, entry.sha256), source.local, start(f"upload {entry.path}", entry.size))
            done.add(entry.sha256)


def _strata_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("strata")
    except PackageNotFoundError:
        from strata import __version__

        return __version__
