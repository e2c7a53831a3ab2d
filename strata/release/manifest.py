"""The release manifest (what a version holds, with sizes and sha256) and where things live in a store."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from strata.errors import StrataError

FORMAT = 1
MANIFEST = "manifest.json"
RESERVED = frozenset({"blobs", "versions", "tags", "latest"})  # store folder names; `latest` is a tag
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")


def check_name(value: str, what: str) -> str:
    """A release name, version or tag: letters, digits, '.', '_', '-', starting with a letter or digit."""
    if not isinstance(value, str) or not _NAME.match(value):
        raise StrataError(f"{what} {value!r} must be letters, digits, '.', '_' or '-' (starting with a letter or "
                          "digit, at most 128 characters).")
    return value


def check_version(value: str) -> str:
    check_name(value, "release version")
    if value in RESERVED:
        raise StrataError(f"release version {value!r} is reserved; pick another, e.g. {default_version()}.")
    return value


def default_version(now: datetime | None = None) -> str:
    """vYYYYMMDD-HHMM in UTC."""
    return (now or datetime.now(timezone.utc)).strftime("v%Y%m%d-%H%M")


def parse_ref(ref: str) -> tuple[str, str | None]:
    """`NAME[@VERSION|@TAG]` -> (name, version-or-tag or None)."""
    name, at, which = ref.strip().partition("@")
    check_name(name, "release name")
    if at:
        check_name(which, "release version or tag")
    return name, (which if at else None)


def manifest_key(name: str, version: str) -> str:
    return f"{name}/versions/{version}/{MANIFEST}"


def blob_key(name: str, sha256: str) -> str:
    """Files are stored by content: two publishers writing one key write the same bytes, and unchanged files
    (the 4 GB GGUF when only an adapter changed) are uploaded once."""
    return f"{name}/blobs/sha256/{sha256}"


@dataclass(frozen=True)
class FileEntry:
    """One file of a release: its path inside the release folder, role, size and sha256."""

    path: str
    role: str
    size: int
    sha256: str


@dataclass
class Manifest:
    """Everything a release is; the manifest goes up last, so a version exists only once all its files do."""

    name: str
    version: str
    created: str
    strata_version: str
    base_fingerprint: str | None
    model: str
    files: list[FileEntry]
    adapters: list[dict[str, Any]] = field(default_factory=list)
    soft_prompts: list[dict[str, Any]] = field(default_factory=list)  # soft_prompts/NAME/ entries
    qa: dict[str, Any] | None = None
    fidelity: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None  # the base-vs-layer gate's matrix and verdicts (strata.qa.gate)

    def to_bytes(self) -> bytes:
        body = {"format": FORMAT, **asdict(self)}
        return (json.dumps(body, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> "Manifest":
        try:
            body = json.loads(data.decode("utf-8"))
            if body.get("format") != FORMAT:
                raise StrataError(f"{where} has manifest format {body.get('format')!r}; this strata reads format "
                                  f"{FORMAT}: upgrade strata on this pod.")
            body.pop("format")
            body["files"] = [FileEntry(**f) for f in body["files"]]
            return cls(**body)
        except StrataError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise StrataError(f"{where} is not a valid release manifest ({type(exc).__name__}: {exc}); publish the "
                              "release again.") from None

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def differences(self, other: "Manifest") -> list[str]:
        """Paths whose bytes (or presence) differ between two manifests: empty means the same release."""
        mine, theirs = {f.path: f for f in self.files}, {f.path: f for f in other.files}
        return sorted(p for p in mine.keys() | theirs.keys() if mine.get(p) != theirs.get(p))

    def adapter(self, name: str) -> dict[str, Any] | None:
        return next((a for a in self.adapters if a["name"] == name), None)

    def failed_layers(self) -> list[dict[str, Any]]:
        """Adapters whose base-vs-layer gate verdict is failed."""
        return [a for a in self.adapters if (a.get("gate") or {}).get("passed") is False]

    def failed_gates(self) -> list[dict[str, Any]]:
        return [g for g in (self.qa or {}).get("gates", []) if not g.get("passed")]

    @property
    def verdict(self) -> str:
        """The QA verdict the release carries: none, passed or FAILED (any failed QA gate or gated layer)."""
        if self.failed_layers():
            return "FAILED"
        if self.qa is None:
            return "none"
        return "FAILED" if self.failed_gates() else "passed"
