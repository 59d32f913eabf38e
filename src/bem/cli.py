"""The ``bem`` command: serve, worker, migrate, import, backup, restore, drill, demo, users,
tokens, rotate-secret-key, openapi."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import orjson
import typer
from pydantic import ValidationError
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncSession

import bem.models  # noqa: F401 - every table, so relationships resolve in one-off commands
from bem.auth.models import User
from bem.auth.permissions import Scope
from bem.config import Settings, describe_errors, load_settings
from bem.kit.logging import configure_logging

if TYPE_CHECKING:
    from bem.projects.models import Project

cli = typer.Typer(help="BEM — Building Element Model server.", no_args_is_help=True)
users_cli = typer.Typer(help="Manage users.", no_args_is_help=True)
cli.add_typer(users_cli, name="users")
tokens_cli = typer.Typer(help="Manage personal API tokens.", no_args_is_help=True)
cli.add_typer(tokens_cli, name="tokens")
err = Console(stderr=True, soft_wrap=True)

DEMO_PROJECT = "Demo"
DEMO_MODEL = "Architecture"
DEMO_OWNER = "demo@bem.invalid"


def settings_or_exit(*, server: bool = False) -> Settings:
    """Load and validate settings; on error name each bad field and exit 2. Servers log to
    stdout, one-off commands to stderr (their stdout carries results)."""
    try:
        settings = load_settings()
    except ValidationError as exc:
        err.print("[bold red]Invalid configuration:[/]")
        for line in describe_errors(exc):
            err.print(f"  {line}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    configure_logging(settings.log_level, settings.log_json, sys.stdout if server else sys.stderr)
    return settings


def app_from_env() -> Any:
    """uvicorn factory (``bem.cli:app_from_env``), so every worker builds its own app."""
    from bem.app import create_app

    return create_app(settings_or_exit(server=True))


def gateway_from_env() -> Any:
    """uvicorn factory for ``bem gateway``: the live routes, health and metrics only."""
    from bem.app import create_app

    return create_app(settings_or_exit(server=True), gateway=True)


def _bem_command() -> str:
    """How to call this same ``bem`` from the current directory (e.g. ``.venv/bin/bem``)."""
    script = Path(sys.executable).with_name("bem")
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)


def _prepare_multiprocess_metrics() -> None:
    """Several workers write metrics to one directory that /metrics aggregates; it must start
    empty (files of dead processes would count)."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory is None:
        directory = tempfile.mkdtemp(prefix="bem-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    for leftover in Path(directory).glob("*.db"):
        leftover.unlink()


def _exit_cleanly(signum: int, frame: Any) -> None:
    raise SystemExit(0)


HostOption = Annotated[str | None, typer.Option(help="Bind address [BEM_HOST]")]
PortOption = Annotated[int | None, typer.Option(help="Port [BEM_PORT]")]
WorkersOption = Annotated[int | None, typer.Option(help="Worker processes [BEM_WORKERS]")]


def _run_server(
    factory: str, host: str | None, port: int | None, workers: int | None, *, api: bool
) -> None:
    import uvicorn

    settings = settings_or_exit(server=True)
    # uvicorn drains in-flight requests on SIGTERM, then re-raises the signal; answering it
    # with SystemExit(0) makes a graceful stop exit 0, as orchestrators expect.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    host, port = host or settings.host, port or settings.port
    workers = workers or settings.workers
    if workers > 1:
        _prepare_multiprocess_metrics()
    if api:
        err.print(f"BEM serving on http://{host}:{port}  (API docs: http://{host}:{port}/docs)")
        err.print(f"Get a token with: {_bem_command()} users create-admin --email you@example.com")
    else:
        err.print(f"BEM gateway (change feed) on http://{host}:{port}")
    config = uvicorn.Config(
        factory,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,
        log_config=None,
        # Client address and scheme from X-Forwarded-* only when they come from our proxies.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=",".join(str(n) for n in settings.trusted_proxies) or None,
        timeout_graceful_shutdown=int(settings.shutdown_timeout),
    )
    if workers > 1:  # as uvicorn.run, with a supervisor that stops listening first
        from bem.kit.shutdown import Supervisor

        Supervisor(config, sockets=[config.bind_socket()]).run()
        return
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise typer.Exit(3)  # uvicorn's STARTUP_FAILURE: the app or the socket is broken


@cli.command()
def serve(host: HostOption = None, port: PortOption = None, workers: WorkersOption = None) -> None:
    """Serve the API (REST /v1, change feed, health, OpenAPI with Swagger UI and ReDoc)."""
    _run_server("bem.cli:app_from_env", host, port, workers, api=True)


@cli.command()
def gateway(
    host: HostOption = None, port: PortOption = None, workers: WorkersOption = None
) -> None:
    """Serve only the change feed (events, SSE, WebSocket, webhooks), health and metrics:
    long-lived connections apart from the API processes."""
    _run_server("bem.cli:gateway_from_env", host, port, workers, api=False)


@cli.command()
def migrate(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
) -> None:
    """Upgrade the database schema (Alembic) to ``revision``."""
    from bem.kit import migrate as migrations

    settings = settings_or_exit()
    migrations.upgrade(settings, revision)
    err.print(f"Database migrated to {revision}.")


async def _create_admin(settings: Settings, email: str, name: str) -> str:
    from bem.auth.service import create_admin
    from bem.kit.db import one_off_session

    async with one_off_session(settings) as session:
        _, secret = await create_admin(session, email, name)
        await session.commit()
    return secret


@users_cli.command("create-admin")
def create_admin(
    email: Annotated[str, typer.Option(help="The admin's email address")],
    name: Annotated[str, typer.Option(help="Display name")] = "Administrator",
) -> None:
    """Create (or promote) an admin and print a new personal API token (shown once)."""
    if "@" not in email or len(email) > 254:
        err.print("--email must be an email address")
        raise typer.Exit(2)
    secret = asyncio.run(_create_admin(settings_or_exit(), email, name))
    err.print("Admin ready. Personal API token (store it now; it is not shown again):")
    typer.echo(secret)


async def _create_token(
    settings: Settings,
    email: str,
    name: str,
    scopes: list[Scope],
    project: uuid.UUID | None,
    expires_at: datetime | None,
) -> str:
    from bem.auth.audit import Origin
    from bem.auth.models import Principal
    from bem.auth.repository import user_by_email
    from bem.auth.service import create_token, normalize_email
    from bem.kit.db import one_off_session
    from bem.projects.service import visible_to

    async with one_off_session(settings) as session:
        user = await user_by_email(session, normalize_email(email))
        if user is None:
            err.print(f"No user with email {email}.")
            raise typer.Exit(1)
        operator = Principal.of_session(user)
        origin = Origin(user_agent="bem-cli")
        _, secret = await create_token(
            session, origin, operator, visible_to, name, scopes, project, expires_at
        )
        await session.commit()
    return secret


@tokens_cli.command("create")
def tokens_create(
    email: Annotated[str, typer.Option(help="The token's owner")],
    name: Annotated[str, typer.Option(help="What the token is for")],
    scope: Annotated[list[Scope], typer.Option(help="Repeat for several scopes")],
    project: Annotated[uuid.UUID | None, typer.Option(help="Bind the token to one project")] = None,
    expires_days: Annotated[int | None, typer.Option(min=1, max=3650)] = None,
) -> None:
    """Create a personal API token for a user (the same mechanism as POST /v1/me/tokens)."""
    expires_at = datetime.now(UTC) + timedelta(days=expires_days) if expires_days else None
    secret = asyncio.run(_create_token(settings_or_exit(), email, name, scope, project, expires_at))
    err.print("Token created (store it now; it is not shown again):")
    typer.echo(secret)


async def _demo(settings: Settings, size: int, if_empty: bool) -> str:
    """A generated IFC model through the import path (the job, then its geometry job), so
    the demo version is what an imported file gives: elements, relations and a GLB."""
    import tempfile

    from bem.handlers import HANDLERS
    from bem.ingest.service import import_path
    from bem.jobs.service import job_context, run_here
    from bem.kit.db import create_engine, session_factory
    from bem.projects import repository as projects_repo
    from bem.projects import service as projects
    from bem.projects.schemas import ModelCreate, ProjectCreate
    from bem.testing import ifcgen

    engine = create_engine(settings)
    sessions = session_factory(engine)
    try:
        async with sessions() as session:
            owner = await _demo_owner(session)
            existing = await projects_repo.list_projects(session, owner.id, None, None, 1000)
            if if_empty and any(p.name == DEMO_PROJECT for p in existing):
                return "The demo project exists already; nothing to do."
            project = await projects.create_project(
                session, owner, ProjectCreate(name=DEMO_PROJECT, description="Generated model")
            )
            model = await projects.create_model(session, project, ModelCreate(name=DEMO_MODEL))
            with tempfile.TemporaryDirectory(prefix="bem-demo-") as workdir:
                path = Path(workdir) / "demo.ifc"
                ifcgen.generate(size, quirks=ifcgen.Quirks(geometry=True)).write(str(path))
                job = await import_path(
                    session,
                    settings,
                    model_id=model.id,
                    path=path,
                    message="Demo model from bem.testing.ifcgen",
                    created_by=owner.id,
                )
            await session.commit()
        follow_ups: list[uuid.UUID] = []
        ctx = job_context(settings, sessions)

        async def collect(job_id: uuid.UUID) -> None:
            follow_ups.append(job_id)

        ctx.enqueue = collect  # run here, after the import, instead of by a queue
        done = await run_here(ctx, HANDLERS, job.id)
        if done.status != "succeeded":
            return f"The demo import failed: {done.error}"
        for follow_up in follow_ups:
            await run_here(ctx, HANDLERS, follow_up)
        return (
            f"Demo project {project.id}: model {model.id}, version {done.version_id} "
            f"with {done.done} elements."
        )
    finally:
        await engine.dispose()


async def _demo_owner(session: AsyncSession) -> User:
    from sqlalchemy import select

    owner = await session.scalar(select(User).where(User.email == DEMO_OWNER))
    if owner is None:
        owner = User(email=DEMO_OWNER, name="Demo data", is_admin=False)
        session.add(owner)
        await session.flush()
    return owner


@cli.command()
def demo(
    size: Annotated[int, typer.Option(min=1, max=100_000, help="Elements to generate")] = 300,
    if_empty: Annotated[bool, typer.Option(help="Do nothing if the demo project exists")] = False,
) -> None:
    """Load a generated demo model (visible to admins)."""
    err.print(asyncio.run(_demo(settings_or_exit(), size, if_empty)))


@cli.command()
def worker(
    burst: Annotated[bool, typer.Option(help="Exit once the queue is empty")] = False,
) -> None:
    """Run background jobs from the Redis queue (arq), webhook deliveries and backups (asked
    for or scheduled). Needs BEM_REDIS_URL; the API must run with BEM_JOB_QUEUE=redis to send
    jobs here."""
    from bem.jobs.worker import build_worker

    settings = settings_or_exit(server=True)
    if settings.redis_url is None:
        err.print("bem worker needs BEM_REDIS_URL (the queue lives in Redis).")
        raise typer.Exit(2)
    from bem.handlers import HANDLERS, LOOPS

    build_worker(settings, HANDLERS, loops=LOOPS, burst=burst).run()


async def _find_project(session: AsyncSession, ref: str) -> Project:
    from bem.projects import repository as projects_repo
    from bem.projects.models import Project

    try:
        found = await session.get(Project, uuid.UUID(ref))
    except ValueError:
        named = await projects_repo.projects_named(session, ref)
        if len(named) > 1:
            err.print(f"{len(named)} projects are named {ref!r}; pass the project's id.")
            raise typer.Exit(1) from None
        found = named[0] if named else None
    if found is None:
        err.print(f"No project {ref!r}.")
        raise typer.Exit(1)
    return found


async def _import(
    settings: Settings, path: Path, project_ref: str, model_name: str, message: str | None
) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from bem.handlers import HANDLERS
    from bem.ingest.service import import_path
    from bem.jobs.service import job_context, run_here
    from bem.kit.db import create_engine, session_factory
    from bem.kit.errors import Problem
    from bem.projects import repository as projects_repo
    from bem.projects import service as projects
    from bem.projects.schemas import ModelCreate

    engine = create_engine(settings)
    sessions = session_factory(engine)
    try:
        async with sessions() as session:
            project = await _find_project(session, project_ref)
            model = await projects_repo.model_by_name(session, project.id, model_name)
            if model is None:
                model = await projects.create_model(session, project, ModelCreate(name=model_name))
            try:
                job = await import_path(
                    session, settings, model_id=model.id, path=path, message=message
                )
            except Problem as exc:
                err.print(f"[red]Refused:[/] {exc.detail}")
                return 1
            await session.commit()
        columns = (
            "{task.description}",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=err, transient=False) as bar:
            task = bar.add_task("extract", total=None)

            def watch(phase: str, done: int, total: int | None) -> None:
                bar.update(task, description=phase, completed=done, total=total)

            ctx = job_context(settings, sessions)
            ctx.watch = watch
            done = await run_here(ctx, HANDLERS, job.id)
        if done.status != "succeeded":
            error = done.error or {}
            err.print(f"[red]Import failed ({error.get('type')}):[/] {error.get('detail')}")
            return 1
        err.print(f"Imported {path.name} into {project.name} / {model.name}: version")
        typer.echo(str(done.version_id))
        return 0
    finally:
        await engine.dispose()


@cli.command("import")
def import_file(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    project: Annotated[str, typer.Option(help="Project name or id")],
    model: Annotated[str, typer.Option(help="Model name (created if missing)")],
    message: Annotated[str | None, typer.Option(help="What changed")] = None,
) -> None:
    """Import an IFC, IFCZIP, DXF, NDJSON or JSON file as a new version, in this process,
    with a progress bar. Prints the version id."""
    raise typer.Exit(asyncio.run(_import(settings_or_exit(), path, project, model, message)))


@cli.command()
def backup(
    to: Annotated[
        str | None,
        typer.Option(help="s3://bucket/prefix: seal the backup and send it there (BEM_BACKUP_URL)"),
    ] = None,
    keep: Annotated[
        int | None, typer.Option(min=1, help="Newest backups to keep (BEM_BACKUP_KEEP)")
    ] = None,
    keep_daily: Annotated[
        int | None,
        typer.Option(min=0, help="Also the newest of this many days (BEM_BACKUP_KEEP_DAILY)"),
    ] = None,
    keep_weekly: Annotated[
        int | None,
        typer.Option(min=0, help="And of this many ISO weeks (BEM_BACKUP_KEEP_WEEKLY)"),
    ] = None,
) -> None:
    """Back up the database and the stored source files, with a manifest of checksums, into
    BEM_BACKUP_DIR or, sealed with BEM_BACKUP_KEY, to an S3 bucket; apply retention there.
    Prints where the backup went."""
    from bem.ops.backups import Retention, create_backup
    from bem.ops.errors import BackupError

    settings = settings_or_exit()
    configured = Retention.of(settings)
    retention = Retention(
        keep or configured.last,
        configured.daily if keep_daily is None else keep_daily,
        configured.weekly if keep_weekly is None else keep_weekly,
    )
    try:
        location = asyncio.run(create_backup(settings, to=to, keep=retention))
    except BackupError as exc:
        err.print(f"[bold red]Backup failed:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    print(location)


@cli.command("backup-key")
def backup_key() -> None:
    """Print a new key for sealed backups (an age identity) to put in BEM_BACKUP_KEY."""
    from bem.ops.archive import new_key

    print(new_key())


@cli.command()
def restore(
    source: Annotated[
        str, typer.Argument(help="A backup directory, or the s3:// location bem backup printed")
    ],
) -> None:
    """Restore a backup into the empty database BEM_DATABASE_URL names and into the source
    storage, check every table against the backup's manifest, and queue again the jobs the
    snapshot caught waiting or running. Prints a JSON report."""
    from bem.ops.backups import restore_backup
    from bem.ops.errors import BackupError
    from bem.ops.offsite import is_offsite

    settings = settings_or_exit()
    if not is_offsite(source) and not Path(source).is_dir():
        err.print(f"[bold red]Restore failed:[/] {source} is not a backup directory")
        raise typer.Exit(1)
    try:
        done = asyncio.run(restore_backup(settings, source))
    except BackupError as exc:
        err.print(f"[bold red]Restore failed:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    print(orjson.dumps(done.report()).decode())


@cli.command()
def drill(
    to: Annotated[
        str | None,
        typer.Option(help="s3://bucket/prefix: take the backup there (BEM_BACKUP_URL)"),
    ] = None,
    into: Annotated[
        str | None,
        typer.Option(help="An empty database to restore into (default: made and dropped)"),
    ] = None,
    record: Annotated[
        Path | None,
        typer.Option(help="Also keep the report as drill-<time>.json in this directory"),
    ] = None,
) -> None:
    """Rehearse a recovery: back up, restore into a scratch database and storage, check every
    table, and compare the API's answers (a version's pages, a selector, a takeoff, a diff)
    with the live system's. Prints a JSON report with rto_s; exits 1 on any difference."""
    from bem.drill import run_drill
    from bem.ops.errors import BackupError

    settings = settings_or_exit()
    try:
        report = asyncio.run(run_drill(settings, to=to, into=into))
    except BackupError as exc:
        err.print(f"[bold red]Drill failed:[/] {exc}", highlight=False)
        raise typer.Exit(1) from None
    document = orjson.dumps(report, option=orjson.OPT_INDENT_2)
    if record is not None:
        record.mkdir(parents=True, exist_ok=True)
        (record / f"drill-{report['database']}-{report['at']}.json").write_bytes(document + b"\n")
    print(document.decode())
    if not report["ok"]:
        err.print("[bold red]Drill failed:[/] the restored copy answered differently")
        raise typer.Exit(1)


async def _rotate_secret_key(settings: Settings) -> dict[str, int]:
    from bem.auth.service import reseal_totp_secrets
    from bem.events.service import reseal_webhook_secrets
    from bem.kit.db import one_off_session

    async with one_off_session(settings) as session:
        totp, totp_unreadable = await reseal_totp_secrets(session, settings)
        hooks, hooks_unreadable = await reseal_webhook_secrets(session, settings)
        await session.commit()
    return {
        "totp_secrets": totp,
        "webhook_secrets": hooks,
        "unreadable": totp_unreadable + hooks_unreadable,
    }


@cli.command("rotate-secret-key")
def rotate_secret_key() -> None:
    """Seal the stored secrets (TOTP, webhook signing secrets) again with BEM_SECRET_KEY, so
    the keys in BEM_SECRET_KEY_PREVIOUS are no longer needed for them. Prints a JSON report;
    exits 1 when some secret no configured key opens."""
    settings = settings_or_exit()
    report = asyncio.run(_rotate_secret_key(settings))
    print(orjson.dumps(report).decode())
    if report["unreadable"]:
        err.print(
            f"[bold red]{report['unreadable']} sealed secrets open with none of the keys[/] "
            "(BEM_SECRET_KEY, BEM_SECRET_KEY_PREVIOUS): add the key that sealed them"
        )
        raise typer.Exit(1)


@cli.command()
def openapi() -> None:
    """Print the OpenAPI document (committed as openapi.json)."""
    from bem.app import create_app

    schema = create_app(load_settings(profile="test")).openapi()
    sys.stdout.write(orjson.dumps(schema, option=orjson.OPT_INDENT_2).decode() + "\n")


def main() -> None:
    cli()
