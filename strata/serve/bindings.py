"""Adapter bindings (seed 000's "register a binding"): a topic or a document -> an adapter set, kept in
WORKSPACE/bindings.json (written atomically) and carried by releases; /gen/ask runs under them."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from strata.errors import StrataError
from strata.files import atomic_write_json
from strata.serve.config import check_scale
from strata.serve.errors import ApiError
from strata.serve.registry import Ref

FORMAT = 1
KINDS = {"topic": "topics", "document": "documents"}


def _empty() -> dict[str, Any]:
    return {"format": FORMAT, "topics": {}, "documents": {}}


def parse_entries(value: Any, max_scale: float) -> list[dict[str, Any]]:
    """[{"name": N | "path": P, "scale": S}] -> the same, checked (scale finite within ±max_scale, default 1)."""
    if not isinstance(value, list):
        raise ApiError(400, "\"adapters\" must be a list like [{\"name\": \"ASC_Leases\", \"scale\": 1.0}] (a name "
                            "under peft/ or the release's adapters, or a \"path\"); [] removes the binding")
    out = []
    for i, entry in enumerate(value):
        where = f"adapters[{i}]"
        if not isinstance(entry, dict) or set(entry) - {"name", "path", "scale"} or \
                sum(isinstance(entry.get(k), str) and bool(entry.get(k).strip()) for k in ("name", "path")) != 1:
            raise ApiError(400, f"{where} must be {{\"name\": N, \"scale\": S}} or {{\"path\": P, \"scale\": S}} "
                                "(exactly one of name or path)")
        scale = entry.get("scale", 1.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)):
            raise ApiError(400, f"{where}.scale must be a number, got {scale!r:.80}")
        try:
            check_scale(scale, f"{where}.scale", max_scale)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        key = "name" if "name" in entry else "path"
        out.append({key: entry[key], "scale": float(scale)})
    return out


class Bindings:
    """The bindings table: read from `path` (else the release's `seed`), written to `path`."""

    def __init__(self, path: Path, seed: Path | None = None, roots: list[Path] | None = None) -> None:
        self.path = Path(path)
        self.roots = [Path(r) for r in roots or []]
        self._lock = threading.Lock()
        source = self.path if self.path.is_file() else seed if seed is not None and Path(seed).is_file() else None
        self._table = _read(source) if source is not None else _empty()

    def table(self) -> dict[str, Any]:
        with self._lock:
            return json.loads(json.dumps(self._table))

    def set(self, kind: str, key: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
        """Bind `key` (a topic or document) to `entries`; [] removes it. Saved before it takes effect. A path
        inside an adapter root is stored by name, so a release carries the binding to another pod."""
        entries = [self._named(e) for e in entries]
        with self._lock:
            table = json.loads(json.dumps(self._table))
            if entries:
                table[KINDS[kind]][key] = entries
            else:
                table[KINDS[kind]].pop(key, None)
            atomic_write_json(self.path, table)
            self._table = table
            return json.loads(json.dumps(table))

    def _named(self, entry: dict[str, Any]) -> dict[str, Any]:
        if "path" not in entry:
            return entry
        path = Path(entry["path"]).expanduser().resolve()
        for root in self.roots:
            try:
                name = path.relative_to(root.resolve()).as_posix()
            except ValueError:
                continue
            return {"name": name.removesuffix("/adapter.gguf"), "scale": entry["scale"]}
        return entry

    def lookup(self, topic: str | None, document: str | None) -> tuple[str, list[dict[str, Any]]] | None:
        """The binding for a request: its document's, else its topic's (("document"|"topic", entries)), or None."""
        with self._lock:
            if document is not None and document in self._table["documents"]:
                return "document", list(self._table["documents"][document])
            if topic is not None and topic in self._table["topics"]:
                return "topic", list(self._table["topics"][topic])
        return None

    def refs(self, entries: list[dict[str, Any]]) -> list[Ref]:
        """Registry refs for binding entries: a name is looked up under the adapter roots (release, then peft/)."""
        refs = []
        for entry in entries:
            if "path" in entry:
                refs.append(Ref(scale=entry["scale"], path=entry["path"]))
                continue
            found = next((root / entry["name"] for root in self.roots if (root / entry["name"]).exists()), None)
            if found is None:
                raise ApiError(404, f"bound adapter {entry['name']!r} is not under {' or '.join(map(str, self.roots))};"
                                    " bind a path instead, or train/publish that adapter.")
            refs.append(Ref(scale=entry["scale"], path=str(found)))
        return refs


def _read(path: Path) -> dict[str, Any]:
    try:
        table = json.loads(Path(path).read_text(encoding="utf-8"))
        if table.get("format") != FORMAT or not all(isinstance(table.get(k), dict) for k in KINDS.values()):
            raise ValueError("not a bindings table")
    except (OSError, ValueError, AttributeError) as exc:
        raise StrataError(f"{path} is not a bindings file ({exc}); fix or delete it (POST /adapters/bindings "
                          "writes it).") from None
    return table
