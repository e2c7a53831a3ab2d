"""`train_all`: the build stages as a list of data (name, function, inputs, outputs) and a small runner that
records runs/<id>/manifest.json, skips unchanged stages and resumes from a failure."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from strata import runlock
from strata import runmanifest as mf
from strata.errors import StrataError
from strata.files import atomic_write_json, now_iso, now_stamp
from strata.settings import Settings

Echo = Callable[[str], None]
TOPIC_PRESET = "levels/topic"  # topic layers: a step budget from their tokens, not the top level's epochs
BUDGET_KEYS = ("epochs",)  # --max-steps still caps them
TRAIN_KWARGS = ("max_train_samples", "peft", "quantization", "topics", "base_model", "preset", "data", "val_data")


@dataclass(frozen=True)
class Options:
    """What the whole run was asked for; `train` holds quick-training knobs (max_steps, epochs, max_train_samples ...)."""

    per_topic: bool = True
    levels: tuple[int, ...] = (1, 2, 3)
    quant: str = "Q4_K_M"
    train: dict[str, Any] = field(default_factory=dict)
    progress: bool = True
    nproc: int = 1  # devices for training (not an input of any stage: the same adapters, trained faster)
    synthesis: dict[str, Any] = field(default_factory=dict)  # generator, teacher_url, teacher_model
    gate: bool = True  # score base vs every topic layer on the held-out pairs after convert
    topic_train: dict[str, Any] = field(default_factory=dict)  # overrides for the topic layers only


@dataclass(frozen=True)
class Stage:
    """One step. `inputs`/`outputs` are keys (see `resolve`); `run(settings, options, echo)` returns a JSON-able result
    (paths it returns are recorded as outputs too)."""

    name: str
    run: Callable[[Settings, Options, Echo], Any]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...] = ()
    plan: Callable[[Settings, Options], Any] | None = None  # what a dry run shows (a training stage's adapters and steps)


# Named workspace paths; other keys are "preset:<name>", "peft:<dir>", "opt:<Options field>", "pdfs", "base" or
# "userdata:<preset>" (the user files a level trains on: --train-files, else its preset's `datasets:`).
PATHS: dict[str, Callable[[Settings], Path]] = {
    "pretest": lambda s: s.pretest_json,
    "train": lambda s: s.train_jsonl,
    "val": lambda s: s.val_jsonl,
    "dataset_summary": lambda s: s.processed / "dataset_summary.json",
    "pairs_train": lambda s: s.pairs_train_jsonl,
    "pairs_val": lambda s: s.pairs_val_jsonl,
    "synthesis_summary": lambda s: s.synthesis_summary,
    "merged": lambda s: s.merged,
    "model": lambda s: s.model_path,
    "archive": lambda s: s.pdf_archive,
    "index": lambda s: s.workspace / "index.sqlite",
    "embedder": lambda s: _embedder() or s.models / "no-embedder",  # identity only
}


def resolve(settings: Settings, options: Options, key: str) -> Path | Any:
    """An input/output key -> a Path (hashed by content/identity) or a plain value (hashed as JSON)."""
    kind, _, arg = key.partition(":")
    if key in PATHS:
        return PATHS[key](settings)
    if kind == "preset":
        from strata.presets import presets_dir

        return presets_dir() / f"{arg}.yaml"
    if kind == "peft":
        return settings.peft / arg
    if kind == "opt":
        return getattr(options, arg)
    raise StrataError(f"pipeline stage key {key!r} is unknown; use one of {sorted(PATHS)} or "
                      "preset:/peft:/opt:/pdfs/base")


def input_hashes(settings: Settings, options: Options, keys: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Each input key -> {"path", "hash"}. PDFs count wherever they sit (raw or archived), so archiving changes nothing.
    The base counts as the value the stages read (--base-model, else BASE_MODEL) and the folder it names: a hub id is
    never a path, so its models/<name> folder is hashed, together with the id."""
    hashes: dict[str, dict[str, Any]] = {}
    for key in keys:
        if key == "topic_adapters":  # every layer's adapter.gguf (not the summaries the gate writes into)
            files = sorted(settings.peft.glob("*/adapter.gguf")) if settings.peft.is_dir() else []
            hashes[key] = {"path": str(settings.peft), "hash": mf.value_identity([[str(f), mf.file_identity(f)]
                                                                                  for f in files])}
            continue
        if key == "base":
            from strata.modelfolder import base_model_dir

            value, folder, _ = base_model_dir(settings, options.train.get("base_model"))
            hashes[key] = {"path": str(folder), "hash": mf.value_identity([value, mf.path_identity(folder)])}
            continue
        if key == "pdfs":
            roots = (settings.raw_pdfs, settings.pdf_archive)
            hashes[key] = {"path": [str(root) for root in roots], "hash": mf.path_identity(*roots)}
            continue
        if key.startswith("userdata:"):
            files, names = user_inputs(settings, options, key.partition(":")[2])
            hashes[key] = {"path": [str(f) for f in files] or None,  # none: the level trains on the PDF dataset
                           "hash": mf.value_identity({"files": mf.path_identity(*files), "names": names})
                           if files or names else "none"}
            continue
        target = resolve(settings, options, key)
        is_path = isinstance(target, Path)
        hashes[key] = {"path": str(target) if is_path else None,
                       "hash": mf.path_identity(target) if is_path else mf.value_identity(target)}
    return hashes


def user_inputs(settings: Settings, options: Options, preset: str) -> tuple[list[Path], list[str]]:
    """The user files (and non-local dataset names) a training stage reads: --train-files / --dataset-name, else
    the `datasets:` of its preset (relative to the workspace). Empty for a level on the PDF dataset."""
    from strata import userdata
    from strata.train.trainconfig import load_train_preset

    entries = options.train.get("data")
    root = None if entries else settings.workspace
    if not entries:
        entries = load_train_preset(0, options.train.get("preset") or preset).datasets
    files: list[Path] = []
    names: list[str] = []
    for entry in (*(entries or ()), *(options.train.get("val_data") or ())):
        source = userdata.source_from(entry)
        if source.files is not None:
            files += userdata.expand(source.files, root)
        elif Path(source.name).expanduser().exists():
            files.append(Path(source.name).expanduser())
        else:
            names.append(source.name)
    return files, names


def check_user_files(settings: Settings, options: Options, stages: list[Stage]) -> None:
    """Refuse a run in which a stage would write over (or into) a file the user trains on."""
    outputs = {key: Path(resolve(settings, options, key)) for stage in stages for key in stage.outputs}
    for stage in stages:
        for key in stage.inputs:
            if not key.startswith("userdata:"):
                continue
            for file in user_inputs(settings, options, key.partition(":")[2])[0]:
                for out_key, out in outputs.items():
                    if file.resolve() == out.resolve() or out.resolve() in file.resolve().parents:
                        raise StrataError(f"{file} is your training data but `strata build all` writes {out} "
                                          f"({out_key}); it never overwrites user files: copy it elsewhere (e.g. "
                                          f"{settings.workspace / 'data' / 'user'}) and point --train-files there.")


def _train_args(options: Options) -> tuple[dict[str, Any], dict[str, Any]]:
    """train_level keyword arguments, and the preset overrides (every other training option)."""
    kwargs = {k: v for k, v in options.train.items() if k in TRAIN_KWARGS}
    return kwargs, {k: v for k, v in options.train.items() if k not in TRAIN_KWARGS}


def _train_plan(level: int, per_topic: bool, preset: str | None = None) -> Callable[[Settings, Options], Any]:
    def plan(settings: Settings, options: Options) -> list[dict[str, Any]]:
        from strata.train.trainer import plan_level

        kwargs, overrides = _train_args(options)
        return plan_level(settings, level, per_topic=per_topic, overrides=overrides, nproc=options.nproc,
                          **({"preset": preset} | kwargs))
    return plan


def _train_call(level: int, per_topic: bool, preset: str | None = None) -> Callable[[Settings, Options, Echo], Any]:
    def run(settings: Settings, options: Options, echo: Echo) -> list[str]:
        from strata.train.trainer import train_level

        kwargs, overrides = _train_args(options)
        if per_topic:  # topic layers budget their steps from their tokens, not the levels' epochs
            overrides = {k: v for k, v in overrides.items() if k not in BUDGET_KEYS} | options.topic_train
        written = train_level(settings, level, per_topic=per_topic, progress=options.progress, overrides=overrides,
                              nproc=options.nproc, check=False, **({"preset": preset} | kwargs))  # preflight ran
        return [str(p) for p in written]
    return run


def _pretest(settings: Settings, options: Options, echo: Echo) -> dict[str, Any]:
    from strata.data.pretest import run_pretest

    docs = run_pretest(settings)["documents"]
    return {"pdfs": len(docs), "recommended": sum(1 for d in docs if d.get("recommended"))}


def _dataset(settings: Settings, options: Options, echo: Echo) -> dict[str, Any]:
    from strata.data.dataset import build_dataset

    return {"counts": build_dataset(settings)["counts"]}


def _synthesize(settings: Settings, options: Options, echo: Echo) -> dict[str, Any]:
    from strata.data.synthesis import synthesize, teacher_from

    summary = synthesize(settings, generator=options.synthesis.get("generator"),
                         teacher=teacher_from(options.synthesis), progress=options.progress, echo=echo)
    return {k: summary[k] for k in ("generator", "pairs", "train", "val", "per_type", "rejected")}


def _gate(settings: Settings, options: Options, echo: Echo) -> dict[str, Any]:
    from strata.qa.gate import run_gate

    return run_gate(settings, progress=options.progress, echo=echo)


def _index(settings: Settings, options: Options, echo: Echo) -> dict[str, Any]:
    from strata.index.builder import build_index

    return build_index(settings, embedding_model=_embedder(), progress=options.progress, echo=echo)


def _embedder() -> Path | None:
    """EMBEDDING_MODEL (`none`: lexical only), else the kit's MiniLM GGUF when `strata kit embedder` has made it."""
    from strata.kit.embedder import embedder_setting

    return embedder_setting(os.environ.get("EMBEDDING_MODEL"))


def _merge(settings: Settings, options: Options, echo: Echo) -> str:
    from strata.export.merge import merge_levels

    return str(merge_levels(settings, list(options.levels), echo=echo))


def _convert(settings: Settings, options: Options, echo: Echo) -> dict[str, Any]:
    from strata.export.convert import convert_model

    return convert_model(settings, quant=options.quant, echo=echo)


def _archive(settings: Settings, options: Options, echo: Echo) -> dict[str, Any]:
    from strata.data.archive import archive_pdfs

    record = archive_pdfs(settings)
    return {"moved": len(record["moved"]), "skipped": len(record["skipped"]), "record": record.get("record")}


def default_stages(options: Options) -> list[Stage]:
    """Seed order: pretest -> dataset -> evidence index -> synthesize -> level1..N -> per-topic layers -> merge
    -> convert -> gate -> archive.

    Topic layers train on the base with every level merged in (with the top level's preset): that stack is exactly
    the model convert writes to MODEL_PATH, so a topic adapter served on it is what was trained."""
    levels = sorted(options.levels)
    data = ("train", "val", "pairs_train", "pairs_val", "base", "opt:train")
    stages = [Stage("pretest", _pretest, ("pdfs", "preset:pretest"), ("pretest",)),
              Stage("dataset", _dataset, ("pretest", "pdfs", "preset:dataset", "base"), ("train", "val", "dataset_summary")),
              Stage("index", _index, ("train", "val", "base", "embedder"), ("index",)),
              Stage("synthesize", _synthesize, ("train", "val", "base", "preset:synthesis", "opt:synthesis"),
                    ("pairs_train", "pairs_val", "synthesis_summary"))]
    for level in levels:
        below = tuple(f"peft:level{k}" for k in range(1, level))
        stages.append(Stage(f"level{level}", _train_call(level, False),
                            (*data, f"preset:levels/level{level}", f"userdata:levels/level{level}", *below),
                            (f"peft:level{level}",), plan=_train_plan(level, False)))
    if options.per_topic and levels:
        top = levels[-1]
        stages.append(Stage("topics", _train_call(top + 1, True, preset=TOPIC_PRESET),
                            (*data, "opt:topic_train", f"preset:{TOPIC_PRESET}", f"userdata:{TOPIC_PRESET}",
                             *(f"peft:level{k}" for k in range(1, top + 1))),
                            plan=_train_plan(top + 1, True, preset=TOPIC_PRESET)))
    stages += [Stage("merge", _merge, ("base", *(f"peft:level{k}" for k in levels)), ("merged",)),
               Stage("convert", _convert, ("merged", "val", "preset:convert", "opt:quant"), ("model",))]
    if options.per_topic and levels and options.gate:
        stages.append(Stage("gate", _gate, ("model", "pairs_val", "preset:gate", "preset:qa/general", "topic_adapters")))
    stages.append(Stage("archive", _archive, ("dataset_summary",), ("archive",)))
    return stages


def _returned_paths(result: Any) -> list[str]:
    items = result if isinstance(result, (list, tuple)) else [result]
    return [str(p) for p in items if isinstance(p, (str, Path)) and Path(p).exists()]


def run_stages(settings: Settings, stages: list[Stage], options: Options, *, force: bool = False,
               echo: Echo = print, run_id: str | None = None) -> dict[str, Any]:
    """Run `stages` in order under a new runs/<id>/manifest.json (rewritten after every stage). A stage is skipped when
    its inputs hash as at its last success and that success's outputs still exist. Raises StrataError on a failure."""
    settings.ensure_skeleton()
    run_id = run_id or now_stamp()
    path = settings.runs / run_id / mf.MANIFEST
    record: dict[str, Any] = {"run_id": run_id, "status": "running", "started": now_iso(),
                              "options": asdict(options), "force": force, "stages": []}
    for number, stage in enumerate(stages, 1):
        label = f"[{number}/{len(stages)}] {stage.name}"
        started = time.monotonic()
        entry: dict[str, Any] = {"name": stage.name, "status": "running", "error": None}
        record["stages"].append(entry)
        try:
            inputs = input_hashes(settings, options, stage.inputs)
            entry.update(inputs=inputs, input_hash=mf.value_identity({k: v["hash"] for k, v in inputs.items()}))
            previous = None if force else _unchanged(settings, stage.name, entry["input_hash"], exclude=path)
            if previous:
                entry.update(status="skipped", outputs=previous.get("outputs", []), result=previous.get("result"),
                             from_run=previous.get("from_run"))
                echo(f"{label}: skipped (inputs unchanged since run {entry['from_run']}, outputs present)")
            else:
                echo(f"{label} ...")
                atomic_write_json(path, record)
                result = stage.run(settings, options, echo)
                declared = [str(resolve(settings, options, k)) for k in stage.outputs]
                entry.update(status="ok", result=result, from_run=run_id,
                             outputs=sorted(set(declared + _returned_paths(result))))
                echo(f"{label}: ok ({time.monotonic() - started:.1f}s)")
        except Exception as exc:
            entry.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            record["status"] = "failed"
            echo(f"{label}: FAILED: {exc}")
        finally:
            if entry["status"] == "running":  # interrupted (Ctrl-C): record it, then let it propagate
                entry.update(status="failed", error="interrupted")
                record["status"] = "interrupted"
            entry["duration_s"] = round(time.monotonic() - started, 3)
            atomic_write_json(path, record)
        if entry["status"] == "failed":
            record["stages"] += [{"name": s.name, "status": "not run"} for s in stages[number:]]
            record["finished"] = now_iso()
            atomic_write_json(path, record)
            raise StrataError(f"stage {stage.name} failed: {entry['error']}\nManifest: {path}. Fix the cause and run "
                              f"`strata build all` again: unchanged stages are skipped and it continues from {stage.name}.")
    record.update(status="ok", finished=now_iso())
    atomic_write_json(path, record)
    return record | {"manifest": str(path)}


def _unchanged(settings: Settings, name: str, input_hash: str, exclude: Path | None = None) -> dict[str, Any] | None:
    """The last success of stage `name` if it had these inputs and its outputs still exist (the stage can be skipped)."""
    previous = mf.last_success(settings.runs, name, exclude=exclude)
    if previous and previous.get("input_hash") == input_hash and all(Path(p).exists() for p in previous.get("outputs", [])):
        return previous
    return None


def plan_stages(settings: Settings, stages: list[Stage], options: Options, *, force: bool = False,
                echo: Echo = print) -> dict[str, Any]:
    """What `run_stages` would do, running and writing nothing: each stage skipped or run (and why), its inputs
    (missing ones named), its outputs, and for training stages each adapter's records, blocks and optimiser steps
    (counted from the current training data; a stage after one that rewrites that data is counted from what
    exists now, or not at all when nothing does)."""
    changed: dict[str, str] = {}  # output key -> the earlier stage that will rewrite it
    planned = []
    for number, stage in enumerate(stages, 1):
        inputs = input_hashes(settings, options, stage.inputs)
        after = sorted({changed[k] for k in stage.inputs if k in changed})
        previous = None if force or after else _unchanged(settings, stage.name, mf.value_identity(
            {k: v["hash"] for k, v in inputs.items()}))
        entry: dict[str, Any] = {
            "name": stage.name, "action": "skip" if previous else "run",
            "reason": (f"inputs unchanged since run {previous['from_run']}" if previous else "--force" if force
                       else f"after {', '.join(after)}" if after else "inputs changed or never run"),
            "inputs": {k: v["path"] for k, v in inputs.items() if v["path"]},
            "missing": [k for k, v in inputs.items() if v["hash"] == "missing"],
            "outputs": [str(resolve(settings, options, k)) for k in stage.outputs]}
        if stage.plan is not None and not previous:
            try:
                entry["adapters"] = stage.plan(settings, options)
            except StrataError as exc:  # e.g. the dataset stage has not written train.jsonl yet
                entry["adapters"], entry["plan_note"] = None, str(exc).splitlines()[0]
        if not previous:
            changed.update({k: stage.name for k in stage.outputs})
        planned.append(entry)
        echo(describe_planned(number, len(stages), entry))
    return {"dry_run": True, "stages": planned}


def describe_planned(number: int, total: int, entry: dict[str, Any]) -> str:
    """One dry-run stage as text: action and reason, inputs, missing inputs, and each adapter's steps."""
    lines = [f"[{number}/{total}] {entry['name']}: would {entry['action']} ({entry['reason']})"]
    lines += [f"    in  {key}: {path}" for key, path in entry["inputs"].items()]
    lines += [f"    missing: {', '.join(entry['missing'])}"] if entry["missing"] else []
    lines += [f"    out {path}" for path in entry["outputs"]]
    for adapter in entry.get("adapters") or []:
        lines.append(f"    adapter {adapter['name']}: {adapter['records']} records -> {adapter['blocks']} blocks, "
                     f"{adapter['tokens']} tokens, {adapter['steps']} steps -> {adapter['out']}")
    if entry.get("plan_note"):
        lines.append(f"    steps: not counted yet ({entry['plan_note']})")
    return "\n".join(lines)


def preflight(settings: Settings, options: Options, echo: Echo) -> None:
    """The base checks every level would run (strata.train.preflight), before pretest and dataset take their time."""
    from strata.modelfolder import resolve_base_model
    from strata.train.preflight import check_base
    from strata.train.trainconfig import load_train_preset

    _, overrides = _train_args(options)
    formats = {f"level {n}": load_train_preset(n, options.train.get("preset"), **overrides).format
               for n in options.levels}
    check_base(settings, resolve_base_model(settings, options.train.get("base_model")), formats, echo=echo)


def run_all(settings: Settings, *, per_topic: bool = True, levels: tuple[int, ...] | list[int] = (1, 2, 3),
            quant: str = "Q4_K_M", train_overrides: dict[str, Any] | None = None, force: bool = False,
            progress: bool = True, nproc: int = 1, synthesis: dict[str, Any] | None = None,
            topic_overrides: dict[str, Any] | None = None, gate: bool = True, dry_run: bool = False,
            echo: Echo = print) -> dict[str, Any]:
    """The whole build chain in seed order; returns the run manifest (plus its path under "manifest").
    It runs as one process; `nproc` > 1 trains each level data-parallel and the topic layers that many at a time.
    `dry_run`: check the presets (each level's TrainingArguments) and the base, then return the plan of every stage
    (plan_stages) without running or writing anything."""
    from strata.export.quantize import ftype_for
    from strata.train import distributed

    if distributed.launched():
        raise StrataError("`strata build all` runs its stages in one process and starts the training processes itself: "
                          "run it without torchrun / accelerate launch, as `strata build all --nproc N` for N devices.")

    ftype_for(quant)  # a typo should not cost a training run
    if not levels or any(int(n) < 1 for n in levels):
        raise StrataError(f"--levels must list level numbers from 1, e.g. 1,2,3; got {list(levels)}")
    options = Options(per_topic=per_topic, levels=tuple(sorted(int(n) for n in levels)), quant=quant.strip().upper(),
                      train={k: v for k, v in (train_overrides or {}).items() if v is not None}, progress=progress,
                      synthesis={k: v for k, v in (synthesis or {}).items() if v is not None},
                      topic_train={k: v for k, v in (topic_overrides or {}).items() if v is not None}, gate=gate,
                      nproc=nproc)
    stages = default_stages(options)
    check_user_files(settings, options, stages)
    if dry_run:  # a plan only: it takes no run lock
        preflight(settings, options, echo)
        check_presets(options)
        return plan_stages(settings, stages, options, force=force, echo=echo)
    with runlock.hold(settings.runs, "build all") as run_id:  # one run per workspace (the console's 409 too)
        preflight(settings, options, echo)
        return run_stages(settings, stages, options, force=force, echo=echo, run_id=run_id)


def check_presets(options: Options) -> None:
    """Build each level's TrainingArguments from its preset, so a typo in a `trainer:` block fails the dry run."""
    import tempfile

    from strata.train.trainargs import training_arguments
    from strata.train.trainconfig import load_train_preset

    _, overrides = _train_args(options)
    with tempfile.TemporaryDirectory() as scratch:
        for level in options.levels:
            cfg = load_train_preset(level, options.train.get("preset"), **overrides)
            try:
                training_arguments(cfg, Path(scratch), steps=1, device="cpu", dtype=None, evaluate_first=False,
                                   progress=False)
            except StrataError as exc:
                raise StrataError(f"level {level} ({options.train.get('preset') or f'levels/level{level}'}): {exc}") from None
