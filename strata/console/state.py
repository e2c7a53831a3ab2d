"""The console's per-app state (kept in app.state.console, never a module global)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from strata.console.arena import Store


@dataclass
class Console:
    """Workspace, the way to the engine, the key, the adapter roots and the arena's vote store."""

    workspace: Path
    upstream: Any  # upstream.Local | Remote | NoServer
    api_key: str | None = None
    max_lora_scale: float = 8.0
    roots: Callable[[], list[Path]] = field(default=lambda: [])
    release: dict[str, Any] | None = None
    prompt_set: str | None = None
    secure_cookie: bool = False
    templates: Any = None  # the Jinja environment (autoescaping), made by strata.console.app
    store: Store = field(init=False)

    def __post_init__(self) -> None:
        self.workspace = Path(self.workspace)
        self.store = Store(self.workspace)
