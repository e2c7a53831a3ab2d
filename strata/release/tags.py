"""Tags (`prod`, `latest`, ...) that point at versions; resolving NAME@VERSION|@TAG; promote with its QA gate."""

from __future__ import annotations

import json
from typing import Any

from strata.errors import StrataError
from strata.files import now_iso
from strata.release.manifest import Manifest, check_name, manifest_key, parse_ref
from strata.release.stores import Store

LATEST = "latest"


def tag_key(name: str, tag: str) -> str:
    return f"{name}/tags/{tag}.json"


def versions(store: Store, name: str) -> list[str]:
    """Published versions of `name` (those whose manifest is in the store), oldest name first."""
    return [v for v in store.children(f"{name}/versions") if store.size(manifest_key(name, v)) is not None]


def names(store: Store) -> list[str]:
    """Every release name with at least one published version."""
    return [n for n in store.children("") if versions(store, n)]


def read_tags(store: Store, name: str) -> dict[str, dict[str, Any]]:
    """tag -> its record ({"tag", "version", "updated", "previous"})."""
    tags = {}
    for file in store.children(f"{name}/tags"):
        if file.endswith(".json") and (data := store.read(f"{name}/tags/{file}")) is not None:
            try:
                tags[file.removesuffix(".json")] = json.loads(data)
            except json.JSONDecodeError:
                continue  # a torn tag from another tool: ignore it rather than fail every command
    return tags


def set_tag(store: Store, name: str, tag: str, version: str) -> dict[str, Any]:
    check_name(tag, "tag")
    old = read_tags(store, name).get(tag, {})
    record = {"tag": tag, "version": version, "updated": now_iso(), "previous": old.get("version")}
    store.write(tag_key(name, tag), (json.dumps(record, indent=2) + "\n").encode("utf-8"))
    return record


def unknown_release(store: Store, name: str) -> StrataError:
    known = names(store)
    listing = f"releases there: {', '.join(known)}" if known else "it holds no releases yet"
    return StrataError(f"no release named {name!r} in {store.url} ({listing}); check the name, or publish one with "
                       f"`strata release publish --name {name} --store {store.url}`.")


def resolve(store: Store, ref: str) -> tuple[str, str, str | None]:
    """NAME[@VERSION|@TAG] -> (name, version, tag or None); no @ means @latest; a version beats a tag of that name."""
    name, which = parse_ref(ref)
    which = which or LATEST
    if store.size(manifest_key(name, which)) is not None:
        return name, which, None
    known = versions(store, name)
    if not known:
        raise unknown_release(store, name)
    tags = read_tags(store, name)
    if which in tags:
        return name, tags[which]["version"], which
    raise StrataError(f"release {name} has no version or tag {which!r} in {store.url} (versions: {', '.join(known)}; "
                      f"tags: {', '.join(sorted(tags)) or 'none'}); promote one with "
                      f"`strata release promote {name}@{known[-1]} --tag {which}`.")


def load(store: Store, name: str, version: str) -> tuple[Manifest, bytes]:
    """The manifest of NAME@VERSION and its exact bytes."""
    data = store.read(manifest_key(name, version))
    if data is None:
        raise StrataError(f"release {name}@{version} is not in {store.url}; `strata release show {name}` lists "
                          "its versions.")
    return Manifest.from_bytes(data, f"{store.url}/{manifest_key(name, version)}"), data


def promote(store: Store, ref: str, tag: str, force: bool = False) -> tuple[dict[str, Any], list[str]]:
    """Point `tag` at NAME@VERSION. Refused (unless force) when the release has no QA results, a failed QA gate or
    a layer that failed the base-vs-layer gate.
    Returns (tag record, warnings)."""
    name, which = parse_ref(ref)
    if which is None:
        raise StrataError(f"name the version to promote: `strata release promote {name}@VERSION --tag {tag}` "
                          f"(`strata release show {name}` lists them).")
    check_name(tag, "tag")
    name, version, _ = resolve(store, ref)
    if store.size(manifest_key(name, tag)) is not None:
        raise StrataError(f"{tag!r} is a version of {name}, so it cannot be a tag; pick another tag name.")
    manifest, _ = load(store, name, version)
    problems = qa_problems(manifest)
    if problems and not force:
        raise StrataError(f"refusing to promote {name}@{version} to {tag!r}: {'; '.join(problems)}; fix it and "
                          "publish a new version, or pass --force to promote anyway.")
    return set_tag(store, name, tag, version), problems


def qa_problems(manifest: Manifest) -> list[str]:
    """Why a release is not QA-clean, every reason at once: no QA results or each failed QA gate, and each layer
    that failed the base-vs-layer gate, by name."""
    if manifest.qa is None:
        problems = [f"{manifest.name}@{manifest.version} carries no QA results (run `strata qa` on the build pod "
                    "before `strata release publish`)"]
    else:
        problems = [f"QA gate {g.get('spec')} failed ({g.get('message')})" for g in manifest.failed_gates()]
    return problems + [f"layer {a['name']} failed the base-vs-layer gate ({'; '.join(a['gate'].get('reasons') or [])})"
                       for a in manifest.failed_layers()]
