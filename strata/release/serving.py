"""A release for `strata serve --release` and `strata qa --release`: pulled if needed, or the local copy when the
store is not configured or cannot be reached."""

from __future__ import annotations

from typing import Callable

from strata.errors import StrataError
from strata.release.manifest import MANIFEST, Manifest, parse_ref
from strata.release.pull import TAGS, Pulled, pull, releases_dir
from strata.release.stores import StoreUnreachable, open_store
from strata.release.tags import LATEST
from strata.settings import Settings


def prepare(settings: Settings, ref: str, store_url: str | None = None, *, progress: bool = True,
            echo: Callable[[str], None] = print) -> Pulled:
    """NAME[@VERSION|@TAG] on local disk, verified: pulled from `store_url`; without a store, or when it cannot
    be reached, the copy an earlier pull left under WORKSPACE/releases."""
    if not store_url:
        local = local_release(settings, ref)
        if local is None:
            raise StrataError(f"release {ref} is not in {releases_dir(settings)} and no store is set to pull it "
                              "from: pass --store DIR|s3://bucket/prefix or set STRATA_STORE.")
        echo(f"no release store set; using {local.name}@{local.version} from {local.root}")
        return local
    store = open_store(store_url)
    try:
        return pull(settings, store, ref, progress=progress, echo=echo)
    except StoreUnreachable as exc:
        local = local_release(settings, ref)
        if local is None:
            raise
        echo(f"warning: {exc} Using {local.name}@{local.version}, pulled earlier into {local.root}.")
        return local


def local_release(settings: Settings, ref: str) -> Pulled | None:
    """A complete local copy of NAME@VERSION, or of the version NAME@TAG named at its last pull; else None."""
    name, which = parse_ref(ref)
    which = which or LATEST
    folder = releases_dir(settings) / name
    tag = None
    if not (folder / which / MANIFEST).is_file() and (folder / TAGS / which).is_file():
        tag, which = which, (folder / TAGS / which).read_text().strip()
    manifest_path = folder / which / MANIFEST
    if not manifest_path.is_file():
        return None
    manifest = Manifest.from_bytes(manifest_path.read_bytes(), str(manifest_path))
    missing = [f.path for f in manifest.files if not (folder / which / f.path).is_file()]
    if missing:
        raise StrataError(f"the local copy {folder / which} lacks {', '.join(missing[:3])}; pull it again "
                          f"(`strata release pull {name}@{which}`).")
    return Pulled(name, which, tag, folder / which, manifest)
