"""Seed 002's training runs: history from runs/<id>/ (train_all's manifest.json, the runner's run.json) plus the
workspace's run lock; a trigger starts `strata build ...` as a subprocess under that lock."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from strata import runlock
from strata.console.runner import LOG, RECORD, tail
from strata.files import atomic_write_json, now_iso
from strata.serve.errors import ApiError

MANIFEST = "manifest.json"
# what the trigger may start: seed 003's step names -> `strata build` arguments
STAGES: dict[str, list[str]] = {
    "train_all": ["all"],
    "pdf_pretest": ["pdf-pretest"],
    "build_dataset": ["dataset"],
    "train_level1": ["train", "--level", "1"],
    "train_level2": ["train", "--level", "2"],
    "train_level3": ["train", "--level", "3"],
    "merge_level": ["merge"],
    "convert_to_gguf": ["convert"],
    "archive_pdfs": ["archive"],
}
QUICK_FLAGS = {"max_steps": "--max-steps", "max_train_samples": "--max-train-samples"}  # train and all take both
TRAINING = ("all", "train")
RUN_ID = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_.-]{0,80}$")
DIED = ("the run's process stopped without finishing (killed, or its pod went down); the log up to that "
        "point is kept below.")


class RunConflict(ApiError):
    """409: a run is active; the body names it (seed 002's rule), so a script can follow that run instead."""

    def __init__(self, message: str, run_id: str | None) -> None:
        super().__init__(409, message)
        self.run_id = run_id

    def body(self) -> dict:
        body = super().body()
        body["error"]["run_id"] = self.run_id
        return body | {"run_id": self.run_id}


def _load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _stage_numbers(manifest: dict[str, Any]) -> tuple[int | None, float | None, list[str]]:
    """(sample count, last training loss, adapter dirs trained) from train_all's manifest and the adapters'
    own training_summary.json files."""
    samples, loss, dirs = None, None, []
    for stage in manifest.get("stages", []):
        result = stage.get("result")
        if stage.get("name") == "dataset" and isinstance(result, dict):
            samples = _train_count(result.get("counts"), samples)
        if isinstance(result, list):
            dirs += [str(p) for p in result if (Path(str(p)) / "training_summary.json").is_file()]
    for folder in dirs:
        summary = _load(Path(folder) / "training_summary.json") or {}
        loss = (summary.get("metrics") or {}).get("train_loss", loss)
    return samples, loss, dirs


def _train_count(counts: Any, default: int | None) -> int | None:
    """Training records of the dataset stage: its counts are per topic ({topic: {train, val}}), summed."""
    if not isinstance(counts, dict):
        return default
    per_topic = [c.get("train") for c in counts.values() if isinstance(c, dict)]
    return sum(n for n in per_topic if isinstance(n, int)) if per_topic else default


def _duration(started: str | None, finished: str | None) -> float | None:
    try:
        end = datetime.fromisoformat(finished) if finished else None
        return round((end - datetime.fromisoformat(started)).total_seconds(), 1) if end and started else None
    except (TypeError, ValueError):
        return None


def describe(run_dir: Path, active_id: str | None) -> dict[str, Any] | None:
    """One row of the runs table, or None when the folder is not a run."""
    manifest, record = _load(run_dir / MANIFEST), _load(run_dir / RECORD)
    if manifest is None and record is None:
        return None
    manifest, record = manifest or {}, record or {}
    status = record.get("status") or manifest.get("status") or "unknown"
    if manifest.get("status") == "failed" or record.get("status") == "failed":
        status = "failed"
    error = record.get("error") or next((s.get("error") for s in manifest.get("stages", []) if s.get("error")), None)
    if status == "running" and run_dir.name != active_id:  # nobody holds the lock for it any more
        status, error = "failed", DIED
    samples, loss, dirs = _stage_numbers(manifest)
    started = record.get("started") or manifest.get("started")
    finished = record.get("finished") or manifest.get("finished")
    return {"id": run_dir.name, "command": record.get("command") or "strata build all (terminal)", "status": status,
            "samples": samples, "loss": loss, "started": started, "finished": finished,
            "duration_s": _duration(started, finished), "error": error, "has_log": (run_dir / LOG).is_file(),
            "stages": [{"name": s.get("name"), "status": s.get("status")} for s in manifest.get("stages", [])],
            "adapters": dirs}


def runs(runs_dir: Path, limit: int = 50) -> dict[str, Any]:
    """{"active": the lock holder or None, "runs": newest first}."""
    active = runlock.active(runs_dir)
    active_id = (active or {}).get("run_id")
    rows = []
    if runs_dir.is_dir():
        for folder in sorted((p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(("qa-", "."))),
                             key=lambda p: p.name, reverse=True):
            row = describe(folder, active_id)
            if row:
                rows.append(row)
            if len(rows) >= limit:
                break
    if active_id and not any(r["id"] == active_id for r in rows):  # a terminal run before its first manifest
        rows.insert(0, {"id": active_id, "command": active.get("command"), "status": "running", "samples": None,
                        "loss": None, "started": active.get("started"), "finished": None, "duration_s": None,
                        "error": None, "has_log": False, "stages": [], "adapters": []})
    return {"active": active, "runs": rows}


def command_for(body: Any) -> tuple[str, list[str]]:
    """The trigger's body -> (stage name, `strata build` arguments); 400 naming the problem."""
    body = body if isinstance(body, dict) else {}
    stage = body.get("stage", "train_all")
    if stage not in STAGES:
        raise ApiError(400, f"stage {stage!r} is not one the console starts; use one of {sorted(STAGES)}.")
    args = list(STAGES[stage])
    for field, flag in QUICK_FLAGS.items():
        value = body.get(field)
        if value in (None, ""):
            continue
        if args[0] not in TRAINING or not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ApiError(400, f"{field} must be a positive integer and applies only to train_all and "
                                f"train_level*; got {value!r} for {stage}.")
        args += [flag, str(value)]
    return stage, args


def trigger(workspace: Path, body: Any) -> dict[str, Any]:
    """Take the run lock (409 with the active run's id when held), then start the runner with the lock's fd."""
    stage, args = command_for(body)
    command = [sys.executable, "-m", "strata", "build", *args, "--workspace", str(workspace)]
    runs_dir = workspace / "runs"
    try:
        fd, info = runlock.acquire(runs_dir, f"strata build {' '.join(args)}")
    except runlock.RunActive as exc:
        raise RunConflict(str(exc), exc.info.get("run_id")) from None
    try:
        run_dir = runs_dir / info["run_id"]
        run_dir.mkdir(parents=True)
        atomic_write_json(run_dir / RECORD, {"run_id": info["run_id"], "stage": stage, "command": info["command"],
                                             "status": "running", "started": now_iso(), "argv": command})
        env = {**os.environ, runlock.RUN_ID_ENV: info["run_id"], "WORKSPACE": str(workspace), "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen([sys.executable, "-m", "strata.console.runner", "--lock-fd", str(fd), str(run_dir),
                                    "--", *command], pass_fds=(fd,), env=env, start_new_session=True,
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        threading.Thread(target=process.wait, name=f"reap-{info['run_id']}", daemon=True).start()
    finally:
        os.close(fd)  # the runner (and its child) hold the lock from here on
    return {"run_id": info["run_id"], "stage": stage, "command": info["command"], "status": "running",
            "pid": process.pid}


def run_dir(workspace: Path, run_id: str) -> Path:
    """runs/<id>, 404 unless it is a run folder (the id is checked before it touches the file system)."""
    folder = workspace / "runs" / run_id
    if not RUN_ID.match(run_id) or not folder.is_dir():
        raise ApiError(404, f"no training run {run_id!r} in this workspace; GET /api/training/runs lists them.")
    return folder


def loss_curve(adapters: list[str], limit: int = 400) -> list[dict[str, Any]]:
    """[{name, points: [[step, loss], ...]}] from each trained adapter's loss.jsonl."""
    curves = []
    for folder in adapters:
        points = []
        try:
            for line in (Path(folder) / "loss.jsonl").read_text(encoding="utf-8").splitlines():
                row = json.loads(line) if line.strip() else {}
                if "loss" in row:
                    points.append([row.get("step", len(points)), row["loss"]])
        except (OSError, ValueError):
            continue
        curves.append({"name": Path(folder).name, "points": points[:: max(1, len(points) // limit)]})
    return curves


def log_tail(folder: Path) -> str:
    return tail(folder / LOG, 10**9)
