"""The adapter registry: request refs -> loaded adapters (new paths loaded off the decode loop), the global set,
reference counts per in-flight request, and retirement of adapters nothing uses any more."""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from strata.serve import adapters as ad
from strata.serve.errors import ApiError
from strata.serve.metrics import Metrics
from strata.serve.model import quiet_llama

# The adapters one sequence runs under: (adapter, scale) pairs with a non-zero scale, in request order.
LoraSet = tuple[tuple[ad.Adapter, float], ...]


@dataclass(frozen=True)
class Ref:
    """One entry of an adapter request: a loaded adapter's id, or a path; and its scale."""

    scale: float
    id: int | None = None
    path: str | None = None


def set_key(lora: LoraSet) -> tuple[tuple[int, float], ...]:
    """What identifies an adapter set for batching and for a slot's cached prefix."""
    return tuple((a.id, s) for a, s in lora)


def set_names(lora: LoraSet) -> str:
    """A set's adapter names without scales (metric labels: per-request scales must not make new series)."""
    return "+".join(a.name for a, _ in lora) or "base"


def set_versions(lora: LoraSet) -> str:
    """Each adapter's name and version (name=version joined by +; base: none), for a reply header."""
    return "+".join(f"{a.name}={a.version}" for a, _ in lora) or "base"


def set_label(lora: LoraSet) -> str:
    """A short human name for a set: base, or name@scale joined by +."""
    return "+".join(f"{a.name}@{s:g}" for a, s in lora) or "base"


class Registry:
    """Every loaded adapter. Thread-safe: loads run in worker threads, references are taken on the event loop and
    dropped on the decode thread; llama.cpp frees go through `free` (the scheduler runs them between decodes)."""

    def __init__(self, model: Any, base: ad.BaseInfo, roots: list[Path], convert: Callable[[Path], Path] | None,
                 metrics: Metrics, free: Callable[[list[ad.Adapter]], None], verbose: bool = False,
                 max_loaded: int = 0) -> None:
        self._model = model
        self.base = base
        self.roots = roots
        self._convert = convert
        self._metrics = metrics
        self._free = free
        self._verbose = verbose
        self.adapters: dict[int, ad.Adapter] = {}  # copy-on-write: the event loop iterates it for listings
        self.scales: dict[int, float] = {}  # the global set; scale 0 entries are loaded but not applied
        self._refs: Counter[int] = Counter()
        self._loads: Counter[str] = Counter()  # real file -> times loaded (an adapter's version)
        self.max_loaded = max_loaded  # 0: no limit
        self._next_id = 0
        self._lock = threading.Lock()  # ids, adapters, scales, refs
        self._load_lock = threading.Lock()  # one load at a time, so one new path is never loaded twice

    # -- loading --------------------------------------------------------------------------------------------
    def _load(self, file: Path, given: str) -> ad.Adapter:
        import llama_cpp

        meta, shapes = ad.read_adapter_meta(file)
        ad.check_compatible(file, meta, shapes, self.base)
        started = time.perf_counter()
        with quiet_llama(self._verbose), self._model.adapters_lock:
            handle = llama_cpp.llama_adapter_lora_init(self._model.model.model, str(file).encode())
        if not handle:
            raise ApiError(422, f"llama.cpp could not load the LoRA {file} for this base model (see the server log); "
                                "check that it was exported from this base.")
        self._metrics.adapter_load_seconds.observe(time.perf_counter() - started)
        nbytes = sum(2 * math.prod(shape) for name, shape in shapes.items() if ".lora_" in name)  # F16 in llama.cpp
        with self._lock:
            self._loads[str(file)] += 1
            adapter = ad.Adapter(id=self._next_id, path=given, file=file, key=ad.cache_key(file),
                                 name=ad.display_name(given), handle=handle, meta=meta,
                                 version=self._loads[str(file)], last_used=time.monotonic(), nbytes=nbytes)
            self._next_id += 1
        return adapter

    def resolve(self, refs: list[Ref]) -> LoraSet:
        """Refs -> a set of loaded adapters with their scales (zero scales kept), loading new paths now and keeping
        them only if every ref resolves (404/403/422/400 otherwise, with nothing changed). With a path it blocks:
        run it in a worker thread; refs that are all ids never wait for a load."""
        with self._load_lock if any(ref.id is None for ref in refs) else contextlib.nullcontext():
            by_key = {a.key: a for a in self.adapters.values()}
            fresh: list[ad.Adapter] = []
            out: list[tuple[ad.Adapter, float]] = []
            try:
                for ref in refs:
                    if ref.id is not None:
                        if ref.id not in self.adapters:
                            raise ApiError(404, f"no loaded adapter has id {ref.id}; GET /lora-adapters lists the ids.")
                        out.append((self.adapters[ref.id], ref.scale))
                        continue
                    file = ad.resolve_file(ref.path or "", self.roots, self._convert)
                    key = ad.cache_key(file)
                    adapter = by_key.get(key) or next((a for a in fresh if a.key == key), None)
                    if adapter is None:
                        self._idle_to_evict(len(fresh) + 1, out)  # 429 before loading when nothing can go
                        adapter = self._load(file, ref.path or str(file))
                        fresh.append(adapter)
                    out.append((adapter, ref.scale))
                ids = [a.id for a, _ in out]
                if len(set(ids)) != len(ids):
                    raise ApiError(400, "the same adapter is listed twice; give each adapter once with its scale.")
            except BaseException:
                self._discard(fresh)
                raise
            if fresh:
                evicted = self._idle_to_evict(len(fresh), out)  # only now: a failed request changes nothing
                with self._lock:
                    self.adapters = {**{i: a for i, a in self.adapters.items() if a not in evicted},
                                     **{a.id: a for a in fresh}}
                if evicted:
                    self._metrics.adapter_evictions.inc(len(evicted))
                    self._free(evicted)
                self._metrics.loaded_adapters.set(len(self.adapters))
        return tuple(out)

    def _idle_to_evict(self, adding: int, keep: list[tuple[ad.Adapter, float]]) -> list[ad.Adapter]:
        """With --max-loaded-adapters: the least-recently used adapters that no request, not the global set and not
        `keep` (the request being resolved) uses, enough that `adding` more fit; 429 when too many are in use."""
        if not self.max_loaded:
            return []
        kept = {a.id for a, _ in keep}
        with self._lock:
            over = len(self.adapters) + adding - self.max_loaded
            idle = sorted((a for a in self.adapters.values()
                           if self._refs[a.id] <= 0 and a.id not in self.scales and a.id not in kept),
                          key=lambda a: a.last_used)
        if over > len(idle):
            raise ApiError(429, f"{len(self.adapters)} adapters are loaded (--max-loaded-adapters {self.max_loaded}) "
                                f"and {len(self.adapters) - len(idle)} of them are in use; retry when a request ends, "
                                "use a loaded adapter (GET /lora-adapters), or start the server with a larger "
                                "--max-loaded-adapters.", headers={"Retry-After": "1"})
        return idle[:max(0, over)]

    def _discard(self, fresh: list[ad.Adapter]) -> None:
        """Free adapters loaded for a request that failed: nothing can reference them yet."""
        import llama_cpp

        with self._model.adapters_lock:
            for adapter in fresh:
                llama_cpp.llama_adapter_lora_free(adapter.handle)

    # -- the global set and references ----------------------------------------------------------------------
    def set_global(self, chosen: LoraSet) -> None:
        """Make `chosen` the global set (adapters left out keep scale 0); requests in flight keep theirs."""
        with self._lock:
            self.scales = {a.id: s for a, s in chosen}
        self._metrics.active_adapters.set(sum(1 for s in self.scales.values() if s != 0.0))
        self.retire_stale()

    def global_set(self) -> LoraSet:
        adapters, scales = self.adapters, self.scales
        return tuple((adapters[i], s) for i, s in scales.items() if s != 0.0 and i in adapters)

    def acquire(self, lora: LoraSet | None) -> LoraSet:
        """Take a reference on each adapter of a request's set (None: the global set at this moment), dropping
        zero scales; returns the set the request runs under until it ends."""
        with self._lock:
            live = self.global_set() if lora is None else tuple((a, s) for a, s in lora if s != 0.0)
            gone = [a.name for a, _ in live if a.id not in self.adapters]
            if gone:
                raise ApiError(409, f"adapter {gone[0]} was unloaded while this request was prepared; retry it.")
            self._refs.update(a.id for a, _ in live)
            now = time.monotonic()
            for a, _ in live:
                a.last_used = now
        return live

    def release(self, lora: LoraSet) -> None:
        with self._lock:
            self._refs.subtract(a.id for a, _ in lora)
        self.retire_stale()

    def retire_stale(self) -> None:
        """Drop adapters whose file has changed on disk since they were loaded (a newer copy is loaded) and that
        no request and not the global set uses; their llama.cpp memory is freed between decodes."""
        with self._lock:
            newest: dict[str, int] = {}
            for a in self.adapters.values():
                newest[a.key[0]] = max(newest.get(a.key[0], 0), a.key[1])
            stale = [a for a in self.adapters.values() if a.key[1] < newest[a.key[0]]
                     and self._refs[a.id] <= 0 and a.id not in self.scales]
            if stale:
                self.adapters = {i: a for i, a in self.adapters.items() if a not in stale}
        if stale:
            self._free(stale)
        self._metrics.loaded_adapters.set(len(self.adapters))

    def in_use(self) -> int:
        with self._lock:
            return sum(1 for n in self._refs.values() if n > 0)

    # -- listing --------------------------------------------------------------------------------------------
    def describe(self, adapter: ad.Adapter) -> dict[str, Any]:
        scale = self.scales.get(adapter.id, 0.0)
        return {"id": adapter.id, "path": adapter.path, "file": str(adapter.file), "name": adapter.name,
                "scale": scale, "active": scale != 0.0, "version": adapter.version, "bytes": adapter.nbytes,
                **adapter.meta}

    def listing(self) -> list[dict[str, Any]]:
        return [self.describe(a) for a in self.adapters.values()]

    def active_listing(self) -> list[dict[str, Any]]:
        adapters = self.adapters
        return [self.describe(adapters[i]) for i, s in self.scales.items() if s != 0.0 and i in adapters]

    def refs_for_model(self, model: str | None) -> list[Ref] | None:
        """`"model": "<adapter name>"` selects that adapter alone at scale 1, its newest version: when its file
        changed on disk since the newest load, the ref is the file's path, so the new version is loaded (and the
        old one retires once its requests end). Anything else keeps the global set."""
        named = [a for a in self.adapters.values() if model and a.name == model]
        if not named:
            return None
        newest = max(named, key=lambda a: (a.key[1], a.id))
        try:
            current = ad.cache_key(newest.file)
        except OSError:
            current = newest.key  # the file is gone: keep serving the loaded copy
        if current != newest.key:
            return [Ref(scale=1.0, path=str(newest.file))]
        return [Ref(scale=1.0, id=newest.id)]

    def memory_bytes(self) -> int:
        """Tensor bytes of every loaded adapter (what llama.cpp holds for them)."""
        return sum(a.nbytes for a in self.adapters.values())

    def free_all(self) -> list[ad.Adapter]:
        """Forget every adapter (shutdown); the caller frees them."""
        with self._lock:
            everything, self.adapters, self.scales = list(self.adapters.values()), {}, {}
        return everything
