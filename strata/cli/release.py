"""`strata release`: publish the build's GGUF, adapters and QA to a store; list, show, pull and promote releases."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import click

from strata.cli.common import AliasGroup, friendly_errors, workspace_option
from strata.settings import Settings

STORE_HELP = ("Release store: a folder (a mounted volume, e.g. /workspace/releases) or s3://bucket/prefix "
              "(endpoint from AWS_ENDPOINT_URL, credentials from the AWS chain). Env STRATA_STORE.")


def store_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--store", envvar="STRATA_STORE", metavar="DIR|s3://BUCKET/PREFIX", help=STORE_HELP)(func)


@click.group(cls=AliasGroup)
def release() -> None:
    """Versioned, verified releases: the build pod publishes, any serving pod pulls.

    \b
    strata release publish --store s3://bucket/strata        # MODEL_PATH + peft/* + latest QA
    strata release promote strata@v20250101-1200 --tag prod  # refused if a QA gate failed
    strata release pull strata@prod                          # -> WORKSPACE/releases/strata/<version>/
    strata serve --release strata@prod                       # pull if needed, then serve it
    """


@release.command()
@click.option("--name", help="Release name (default: MODEL_NAME, else the GGUF's name without its quant suffix).")
@click.option("--version", "version", help="Version (default vYYYYMMDD-HHMM, UTC). Published versions are immutable.")
@click.option("--with-peft", is_flag=True, help="Also ship each adapter's PEFT weights (not needed to serve).")
@click.option("--adapter", "adapters", multiple=True, metavar="NAME",
              help="Publish only this adapter dir under peft/ (repeat); default every dir holding adapter.gguf.")
@click.option("--qa", "qa_dir", type=click.Path(file_okay=False, exists=True, path_type=Path),
              help="QA run folder to attach (default: the newest runs/qa-* run on this model).")
@click.option("--no-qa", is_flag=True, help="Attach no QA results (such a release cannot be promoted without --force).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@store_option
@workspace_option
@friendly_errors
def publish(settings: Settings, store: str | None, name: str | None, version: str | None, with_peft: bool,
            adapters: tuple[str, ...], qa_dir: Path | None, no_qa: bool, quiet: bool) -> None:
    """Publish MODEL_PATH (with its fidelity record), every adapter under peft/ and the latest QA results as one
    release. Files go up first, the manifest last: a release exists only once it is complete. `latest` follows."""
    from strata.release.publish import publish as run
    from strata.release.stores import open_store

    run(settings, open_store(store), name=name, version=version, with_peft=with_peft, adapters=adapters,
        qa_dir=qa_dir, no_qa=no_qa, progress=not quiet, echo=click.echo)


@release.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@store_option
@workspace_option
@friendly_errors
def list_(settings: Settings, store: str | None, as_json: bool) -> None:
    """Every release in the store: versions (oldest first) with size, QA verdict, tags, and whether it is
    pulled into this workspace."""
    from strata.release import tags
    from strata.release.pull import is_pulled
    from strata.release.stores import open_store

    target = open_store(store)
    rows = []
    for name in target.children(""):  # a name with no published version lists no rows (one listing each, on S3)
        versions = tags.versions(target, name)
        tagged = tags.read_tags(target, name) if versions else {}
        for version in versions:
            manifest, _ = tags.load(target, name, version)
            rows.append({"name": name, "version": version, "created": manifest.created, "bytes": manifest.total_bytes,
                         "qa": manifest.verdict, "tags": sorted(t for t, r in tagged.items() if r["version"] == version),
                         "pulled": is_pulled(settings, name, version)})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no releases in {target.url}")
    for row in rows:
        click.echo(f"{row['name']}@{row['version']}  {row['created']}  {row['bytes'] / 1e6:9.1f} MB  QA {row['qa']:6}  "
                   f"{'pulled' if row['pulled'] else '      '}  {' '.join(row['tags'])}".rstrip())


@release.command()
@click.argument("ref", metavar="NAME[@VERSION|@TAG]")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as stored.")
@store_option
@workspace_option
@friendly_errors
def show(settings: Settings, ref: str, store: str | None, as_json: bool) -> None:
    """One release's manifest: files (role, size, sha256), adapters, QA gates, the tags pointing at it, and
    its local copy in this workspace."""
    from strata.release import tags
    from strata.release.pull import is_pulled, releases_dir
    from strata.release.stores import open_store

    target = open_store(store)
    name, version, _ = tags.resolve(target, ref)
    manifest, data = tags.load(target, name, version)
    if as_json:
        click.echo(data.decode("utf-8").rstrip())
        return
    tagged = sorted(t for t, r in tags.read_tags(target, name).items() if r["version"] == version)
    click.echo(f"{name}@{version}  created {manifest.created}  strata {manifest.strata_version}  "
               f"tags: {' '.join(tagged) or 'none'}")
    click.echo(f"base fingerprint {manifest.base_fingerprint or 'unknown'}; model {manifest.model}")
    for entry in manifest.files:
        click.echo(f"  {entry.role:16} {entry.size:>12,}  {entry.sha256[:16]}  {entry.path}")
    for adapter in manifest.adapters:
        click.echo(f"  adapter {adapter['name']}: level {adapter.get('level')}, topic {adapter.get('topic') or '-'}, "
                   f"expects base {adapter.get('base_fingerprint') or 'unknown'}")
    click.echo(f"QA: {manifest.verdict}" + (f" (run {manifest.qa['run']})" if manifest.qa else ""))
    for gate in (manifest.qa or {}).get("gates", []):
        click.echo(f"  {'pass' if gate['passed'] else 'FAIL'}  {gate['message']}")
    local = releases_dir(settings) / name / version
    click.echo(f"local copy: {local}" if is_pulled(settings, name, version) else
               f"not pulled into {settings.workspace} (`strata release pull {name}@{version}`)")


@release.command()
@click.argument("ref", metavar="NAME[@VERSION|@TAG]")
@click.option("--verify", is_flag=True, help="Re-hash a copy that is already present instead of trusting it.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@store_option
@workspace_option
@friendly_errors
def pull(settings: Settings, ref: str, store: str | None, verify: bool, quiet: bool) -> None:
    """Download a release (no @: latest) into WORKSPACE/releases/NAME/VERSION/, checking every sha256 while
    writing; it is moved into place only when all of it verified. Re-run an interrupted pull to finish it."""
    from strata.release.pull import pull as run
    from strata.release.stores import open_store

    pulled = run(settings, open_store(store), ref, verify=verify, progress=not quiet, echo=click.echo)
    click.echo(f"model: {pulled.model}")
    click.echo(f"adapters: {pulled.adapters}")


@release.command()
@click.argument("ref", metavar="NAME@VERSION")
@click.option("--tag", required=True, help="Tag to move, e.g. prod (any name; `latest` follows publish).")
@click.option("--force", is_flag=True, help="Promote even without QA results or with a failed QA gate.")
@store_option
@workspace_option
@friendly_errors
def promote(settings: Settings, ref: str, tag: str, force: bool, store: str | None) -> None:
    """Point TAG at NAME@VERSION. Refused when the release carries no QA results or a failed gate (unless --force)."""
    from strata.release import tags
    from strata.release.pull import is_pulled
    from strata.release.stores import open_store

    record, problems = tags.promote(open_store(store), ref, tag, force=force)
    for problem in problems:
        click.echo(f"warning (--force): {problem}", err=True)

    name = ref.partition("@")[0]
    moved = f" (was {record['previous']})" if record["previous"] else ""
    click.echo(f"{name}@{tag} -> {record['version']}{moved}; serving pods get it on start: "
               f"RELEASE={name}@{tag} (pulled here: {'yes' if is_pulled(settings, name, record['version']) else 'no'})")

