"""Cardiac Monitor: composition root and command-line interface.

``cardiac-monitor --help`` lists the commands. Every option can also be set
from the environment: the variable is ``CARDIAC_`` followed by the command
path and the option name in capitals, e.g. ``CARDIAC_EVALUATE_QRS_DATA_DIR``
for ``cardiac-monitor evaluate qrs --data-dir``. The data directory itself
also follows ``ECG_DATA_DIR``.

Heavy imports (torch, matplotlib, wfdb) happen inside the commands so that
``--help`` and shell completion stay fast.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import click

ENV_PREFIX = "CARDIAC"

_DATA_DIR = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder holding mitdb/ and nstdb/ (default: $ECG_DATA_DIR, ../shared/data, the user cache).",
)


@click.group(context_settings={"auto_envvar_prefix": ENV_PREFIX, "show_default": True})
@click.version_option(package_name="cardiac-monitor")
def cli() -> None:
    """Real-time cardiac monitoring: ECG ingest, analysis, alarms and dashboard.

    Every option can also be set from the environment as
    CARDIAC_<COMMAND>_<OPTION>, e.g. CARDIAC_EVALUATE_QRS_RECORDS=100,208.
    """


# data ------------------------------------------------------------------------


@cli.group()
def data() -> None:
    """Find and fetch the reference ECG databases."""


@data.command("fetch")
@click.argument("database", type=click.Choice(["mitdb", "nstdb"]))
@click.option(
    "--dest",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder to hold the database folder (default: the user cache).",
)
@click.option("--records", default=None, help="Comma-separated records (default: all).")
def data_fetch(database: str, dest: Path | None, records: str | None) -> None:
    """Download DATABASE from PhysioNet with wfdb (needs the network)."""
    from tqdm import tqdm

    from sigproc.records import fetch_database

    names = _split(records) if records else None

    def progress(items: Iterable[str]) -> Iterable[str]:
        return tqdm(list(items), desc=f"fetch {database}", unit="record")

    try:
        folder = fetch_database(database, dest, records=names, progress=progress)
    except ConnectionError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{database} is in {folder}")


@data.command("where")
@_DATA_DIR
def data_where(data_dir: Path | None) -> None:
    """Show which folder each database is read from."""
    from sigproc.records import DataNotFoundError, candidate_data_dirs, resolve_database_dir

    click.echo("search order: " + ", ".join(str(d) for d in candidate_data_dirs(data_dir)))
    for database in ("mitdb", "nstdb"):
        try:
            click.echo(f"{database}: {resolve_database_dir(database, data_dir)}")
        except DataNotFoundError as exc:
            click.echo(f"{database}: missing ({exc})")


# train -----------------------------------------------------------------------


#: Click parameter types of the scalar :class:`model.training.TrainConfig` fields, by annotation.
_FIELD_TYPES: dict[str, click.ParamType] = {"bool": click.BOOL, "int": click.INT, "float": click.FLOAT}


def _train_options(func: Any) -> Any:
    """Add one option per :class:`model.training.TrainConfig` field (the paper's defaults).

    Built from the dataclass so the CLI and the config never drift apart;
    tuples are given comma-separated, booleans as ``--x/--no-x``.
    """
    import dataclasses

    from model.training import TrainConfig

    for f in reversed(dataclasses.fields(TrainConfig)):
        name = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        kind = str(f.type)
        if kind == "bool":
            func = click.option(f"{name}/--no-{name[2:]}", f.name, default=default, show_default=True)(func)
        elif kind.startswith("tuple"):
            text = ",".join(str(v) for v in default) if default is not None else ""
            func = click.option(name, f.name, default=text, show_default=True, help="comma-separated")(func)
        else:
            func = click.option(
                name, f.name, type=_FIELD_TYPES.get(kind, click.STRING), default=default, show_default=True
            )(func)
    return func


def _tuple_value(field: Any, text: str) -> tuple[Any, ...]:
    """A comma-separated CLI value of a tuple field of :class:`model.training.TrainConfig`."""
    items = _split(text)
    kind = str(field.type)
    if "int" in kind:
        return tuple(int(v) for v in items)
    return tuple(float(v) for v in items) if "float" in kind else tuple(items)


def _train_overrides(pairs: tuple[str, ...]) -> dict[str, Any]:
    """``KEY=VALUE`` texts -> typed :class:`model.training.TrainConfig` field values.

    Keys are field names or their option spellings (``lead-dropout``);
    values are parsed as the `train` options parse them (booleans: true/false,
    1/0, yes/no, on/off). Raises :class:`click.BadParameter`
    naming the key or value at fault.
    """
    import dataclasses

    from model.evaluation import COMPARISON_SETTINGS
    from model.training import TrainConfig

    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        name = key.strip().lstrip("-").replace("-", "_")
        if not sep or not name:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--set")
        if name not in fields:
            raise click.BadParameter(f"unknown training setting {key.strip()!r}", param_hint="--set")
        if name in COMPARISON_SETTINGS:  # each comparison run sets these itself
            raise click.BadParameter(
                f"{name!r} is set by the comparison itself (use --max-epochs for epochs)", param_hint="--set"
            )
        kind, text = str(fields[name].type), text.strip()
        try:
            if kind.startswith("tuple"):
                out[name] = _tuple_value(fields[name], text)
            else:
                out[name] = _FIELD_TYPES.get(kind, click.STRING).convert(text, None, None)
        except (click.BadParameter, ValueError):
            raise click.BadParameter(f"{name}: {text!r} is not a valid {kind}", param_hint="--set") from None
    return out


@cli.command()
@_train_options
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Checkpoint file."
)
@click.option("--grid", is_flag=True, help="Run the paper's grid search (lr x batch x dropout) instead.")
@click.option("--grid-epochs", default=10, type=click.IntRange(min=1), help="Epoch cap per grid setting.")
def train(out: Path, grid: bool, grid_epochs: int, **fields: Any) -> None:
    """Train a beat classifier (default: CNN-LSTM on DS1, validation records from DS1)."""
    import dataclasses

    from model.data import PreprocessConfig
    from model.training import TrainConfig, grid_search
    from model.training import train as train_model

    values: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        value = fields[f.name]
        try:
            values[f.name] = _tuple_value(f, value) if str(f.type).startswith("tuple") else value
        except ValueError:
            message = f"{value!r} is not a comma-separated {f.type}"
            raise click.BadParameter(message, param_hint=f.name) from None
    try:
        config = TrainConfig(**values)
        config.model_config(PreprocessConfig(n_leads=config.n_leads))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    if grid:
        rows = grid_search(config, out_csv=out.with_suffix(".csv"), max_epochs=grid_epochs)
        click.echo(f"best of {len(rows)} settings: {rows[0] if rows else 'none'}")
        click.echo(f"wrote {out.with_suffix('.csv')}")
    else:
        summary = train_model(config, out=out, progress=True)
        val = summary.get("validation", {})
        if val:
            click.echo(
                f"best epoch {summary.get('best_epoch')} of {summary.get('epochs_run')} "
                f"in {summary.get('train_seconds', 0.0):.0f} s; validation accuracy "
                f"{val.get('accuracy', float('nan')):.2f} %, macro F1 {val.get('macro_f1', float('nan')):.2f}"
            )
        else:
            click.echo(
                f"refitted for {summary.get('epochs_run')} epochs in "
                f"{summary.get('train_seconds', 0.0):.0f} s without validation records; last epoch kept"
            )
        click.echo(f"wrote {out}")


@cli.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Ensemble checkpoint file."
)
def ensemble(runs: tuple[Path, ...], out: Path) -> None:
    """Join RUNS (one setting, different --seed) into one seed-ensemble checkpoint.

    The ensemble averages its members' class probabilities; every command
    that takes a checkpoint (evaluate model, serve, replay) takes it.
    """
    from model.checkpoint import ensemble_checkpoints, save_checkpoint

    try:
        ckpt = ensemble_checkpoints(runs)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="RUNS") from exc
    save_checkpoint(ckpt, out)
    click.echo(f"wrote {out}: {ckpt.members} x {ckpt.model_name}")


@cli.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="Checkpoint file."
)
@click.option("--off", is_flag=True, help="Remove the gate instead.")
@click.option(
    "--svt/--no-svt",
    default=None,
    help="Also call S the beats of fast supraventricular runs (sigproc.rhythm.SVTRule), or not. "
    "Default: as CHECKPOINT has it.",
)
@click.option(
    "--prematurity/--no-prematurity",
    default=None,
    help="Call no beat S that is neither premature nor in a fast run (sigproc.rhythm.PrematurityGate), "
    "or drop that gate. Default: as CHECKPOINT has it.",
)
@click.option(
    "--lags", type=click.IntRange(min=1), default=None, help="Earlier intervals an interval may repeat."
)
@click.option("--window", type=click.IntRange(min=1), default=None, help="Clean intervals in the median.")
@click.option(
    "--threshold", type=click.FloatRange(0.0, min_open=True), default=None, help="Irregularity called AF."
)
def gate(
    checkpoint: Path,
    out: Path,
    off: bool,
    svt: bool | None,
    prematurity: bool | None,
    lags: int | None,
    window: int | None,
    threshold: float | None,
) -> None:
    """Write CHECKPOINT with the atrial-fibrillation gate of the S class attached.

    Inference then finds atrial fibrillation from the RR intervals
    (sigproc.rhythm; defaults chosen on DS1) and calls no beat S while it
    lasts; `evaluate model`, `serve` and `replay` follow the checkpoint.
    """
    from dataclasses import replace

    from model.checkpoint import load_checkpoint, save_checkpoint
    from sigproc.rhythm import AFDetector, PrematurityGate, SVTRule

    ckpt = load_checkpoint(checkpoint)
    if svt is not None:
        ckpt = replace(ckpt, svt_rule=SVTRule() if svt else None)
    if prematurity is not None:
        ckpt = replace(ckpt, prematurity_gate=PrematurityGate() if prematurity else None)
    if off:
        ckpt = replace(ckpt, af_detector=None)
    else:
        given: dict[str, Any] = {"lags": lags, "window": window, "threshold": threshold}
        try:
            ckpt = replace(ckpt, af_detector=AFDetector(**{k: v for k, v in given.items() if v is not None}))
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from exc
    save_checkpoint(ckpt, out)
    rules = {
        "AF gate": ckpt.af_detector,
        "SVT rule": ckpt.svt_rule,
        "prematurity gate": ckpt.prematurity_gate,
    }
    click.echo(f"wrote {out}: " + ", ".join(f"{n} {'off' if r is None else r}" for n, r in rules.items()))


# serve and replay ------------------------------------------------------------

_INSTANCE_DIR = click.option(
    "--instance-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("instance"),
    envvar="CARDIAC_INSTANCE_DIR",
    help="Folder for all state of the embedded default: SQLite database, secrets, logs.",
)
_DATABASE_URL = click.option(
    "--database-url",
    default=None,
    envvar="DATABASE_URL",
    help="SQLAlchemy URL of another database (e.g. postgresql+psycopg://...); default SQLite.",
)


@cli.command()
@click.option("--host", default="127.0.0.1", help="Interface to listen on.")
@click.option("--port", default=8050, type=click.IntRange(0, 65535), help="Port of the dashboard.")
@click.option(
    "--ingest-port", default=8765, type=click.IntRange(0, 65535), help="Port of /ingest, /live, /health."
)
@_INSTANCE_DIR
@_DATABASE_URL
@click.option("--redis-url", default=None, help="Carry the live fan-out through Redis pub/sub.")
@click.option("--demo", is_flag=True, help="Replay MIT-BIH records into this server as demo devices.")
@click.option("--demo-records", default="100,119,208,233", help="Records the demo replays.")
@click.option(
    "--demo-speed", default=1.0, type=click.FloatRange(min=0.0), help="Replay speed (1 = real time)."
)
@click.option(
    "--certfile",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar=["CARDIAC_CERTFILE", "CARDIAC_SERVE_CERTFILE"],
    help="PEM certificate (chain): serve https:// and wss:// only.",
)
@click.option(
    "--keyfile",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    envvar=["CARDIAC_KEYFILE", "CARDIAC_SERVE_KEYFILE"],
    help="PEM private key of --certfile (default: in the certificate file).",
)
@click.option(
    "--behind-proxy",
    is_flag=True,
    envvar=["CARDIAC_BEHIND_PROXY", "CARDIAC_SERVE_BEHIND_PROXY"],
    help="Behind a TLS-terminating reverse proxy: trust its X-Forwarded-* headers (docs/deployment.md).",
)
@_DATA_DIR
def serve(
    host: str,
    port: int,
    ingest_port: int,
    instance_dir: Path,
    database_url: str | None,
    redis_url: str | None,
    demo: bool,
    demo_records: str,
    demo_speed: float,
    certfile: Path | None,
    keyfile: Path | None,
    behind_proxy: bool,
    data_dir: Path | None,
) -> None:
    """Run the dashboard and the ingest/live WebSocket server until SIGTERM (Ctrl-C).

    The first user is created with `cardiac-monitor user add NAME --role admin`;
    there is no default account. With --certfile both servers speak TLS only
    (https://, wss://); see docs/deployment.md, also for a reverse proxy.
    """
    import logging
    import os
    import secrets

    from dashboard import create_app, run_dashboard
    from ingest.pipeline import AnalysisProcessor
    from ingest.server import ServeOptions, run_server
    from ingest.tls import TLSConfigError, server_ssl_context
    from sigproc.records import MITDB_RECORDS

    if keyfile is not None and certfile is None:
        raise click.BadParameter("give the certificate with --certfile too", param_hint="--keyfile")
    try:  # a bad certificate or key stops us before anything starts
        web_tls = server_ssl_context(certfile, keyfile) if certfile is not None else None
    except TLSConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--certfile / --keyfile") from exc
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)  # one line per connection is noise
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    instance_dir.mkdir(parents=True, exist_ok=True)
    records = tuple(_records_option(demo_records, MITDB_RECORDS, "mitdb")) if demo else ()
    # One secret signs the dashboard's short-lived /live tokens and verifies them in
    # the ingest server; without one in the environment, a fresh one per run.
    live_secret = os.environ.get("CARDIAC_MONITOR_LIVE_SECRET") or secrets.token_urlsafe(32)
    wildcard = host in ("0.0.0.0", "::", "")
    live_url = f"ws://{'{host}' if wildcard else host}:{ingest_port}/live"
    if web_tls is not None:  # one certificate serves both: the name the browser used for the page fits
        live_url = f"wss://{{host}}:{ingest_port}/live"
    if behind_proxy:  # the proxy forwards /live to the ingest server, on the page's origin
        live_url = "/live"
    web_config: dict[str, Any] = {}
    if web_tls is not None or behind_proxy:
        web_config["SESSION_COOKIE_SECURE"] = True
    if behind_proxy:
        web_config["BEHIND_PROXY"] = 1

    db = _open_database(database_url, instance_dir)
    dash_app = create_app(
        database=db, instance_path=instance_dir, live_url=live_url, live_secret=live_secret, config=web_config
    )
    web = run_dashboard(dash_app, host=host, port=port, ssl_context=web_tls)
    options = ServeOptions(
        host=host,
        port=ingest_port,
        database_url=database_url,
        instance_path=instance_dir,
        live_secret=live_secret,
        redis_url=redis_url,
        migrate=False,
        demo_records=records,
        demo_speed=demo_speed,
        data_dir=data_dir,
        processor=AnalysisProcessor(db),  # R peaks, CNN-LSTM beats, HR, quality, alarms
        certfile=certfile,
        keyfile=keyfile,
    )
    ingest_scheme = "wss" if web_tls is not None else "ws"
    click.echo(
        f"dashboard on {web.url} ; ingest on {ingest_scheme}://{host}:{ingest_port} ; state in {instance_dir}"
    )
    try:
        run_server(options)
    finally:
        web.shutdown()
        db.dispose()


@cli.group()
def user() -> None:
    """Manage dashboard users (there is no default account)."""


@user.command("add")
@click.argument("username")
@click.option("--role", type=click.Choice(["admin", "clinician", "caregiver"]), required=True)
@click.option("--display-name", default="", help="Name shown in the dashboard.")
@click.option("--ward", default=None, help="Ward of a clinician (none: sees every patient).")
@click.password_option(help="At least 10 characters; prompted (hidden, twice) when not given.")
@_INSTANCE_DIR
@_DATABASE_URL
def user_add(
    username: str,
    role: str,
    display_name: str,
    ward: str | None,
    password: str,
    instance_dir: Path,
    database_url: str | None,
) -> None:
    """Create a user; the password is stored only as an argon2 hash."""
    from dashboard import AuthError, create_user

    db = _open_database(database_url, instance_dir)
    try:
        user_id = create_user(db, username, password, role, display_name=display_name, ward=ward, actor="cli")
    except AuthError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.dispose()
    click.echo(f"created {role} {username!r} (id {user_id})")


@cli.command()
@click.option("--records", default="100", help="Comma-separated MIT-BIH records, or 'all' for a load test.")
@click.option("--server", default="ws://127.0.0.1:8765", help="URL of the ingest server (ws:// or wss://).")
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="PEM certificates to trust for a wss:// server (its CA, or its self-signed certificate).",
)
@click.option("--speed", default=1.0, type=click.FloatRange(min=0.0), help="Multiple of real time (0: max).")
@click.option("--noise", type=click.Choice(["ma", "bw"]), default=None, help="Add NSTDB noise.")
@click.option("--snr", default=6.0, type=float, help="SNR of the added noise in dB (NSTDB definition).")
@click.option(
    "--seconds", default=None, type=click.FloatRange(min=1.0), help="Replay only this many seconds."
)
@_INSTANCE_DIR
@_DATABASE_URL
@_DATA_DIR
def replay(
    records: str,
    server: str,
    speed: float,
    noise: str | None,
    snr: float,
    seconds: float | None,
    ca_file: Path | None,
    instance_dir: Path,
    database_url: str | None,
    data_dir: Path | None,
) -> None:
    """Stream MIT-BIH records to a server through the device protocol, as a NodeMCU would.

    The replay devices are registered (with fresh tokens) in the server's
    database, so give the same --instance-dir or --database-url as `serve`.
    A wss:// server's certificate is always verified: against --ca-file when
    given, else the system's trust store.
    """
    import asyncio

    from ingest.replay import ReplayError, ensure_replay_devices, run_replay
    from ingest.tls import TLSConfigError, client_ssl_context
    from sigproc.records import MITDB_RECORDS

    secure = server.lower().startswith("wss://")
    if ca_file is not None and not secure:
        raise click.BadParameter(f"it is for a wss:// --server, got {server!r}", param_hint="--ca-file")
    try:
        ssl_context = client_ssl_context(ca_file) if secure else None
    except TLSConfigError as exc:
        raise click.BadParameter(str(exc), param_hint="--ca-file") from exc
    names = _records_option(records, MITDB_RECORDS, "mitdb")
    noise_type: Literal["ma", "bw"] | None = "ma" if noise == "ma" else "bw" if noise == "bw" else None
    db = _open_database(database_url, instance_dir)
    try:
        tokens = ensure_replay_devices(db, names)
    finally:
        db.dispose()
    try:
        results = asyncio.run(
            run_replay(
                names,
                server,
                tokens,
                speed=speed,
                noise=noise_type,
                snr_db=snr,
                data_dir=data_dir,
                seconds=seconds,
                ssl_context=ssl_context,
            )
        )
    except ExceptionGroup as group:  # run_replay's task group: a device stopped for good
        refused = group.subgroup(ReplayError)  # refused token, untrusted certificate, too many reconnects
        if refused is None:
            raise
        raise click.ClickException("; ".join(str(e) for e in refused.exceptions)) from group
    for r in results:
        state = "all acknowledged" if r.acked else "NOT all acknowledged"
        click.echo(
            f"{r.record}: {r.samples} samples in {r.frames} frames, {state}; "
            f"{r.reconnects} reconnect(s), {r.frames_resent} frame(s) resent, {r.dropped_frames} dropped"
        )
    if not all(r.acked for r in results):
        raise click.ClickException("some samples were not acknowledged by the server")


# report ----------------------------------------------------------------------


@cli.group()
def report() -> None:
    """One-page PDF reports."""


@report.command("alarm")
@click.argument("alarm_id", type=click.IntRange(min=1))
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="PDF file to write."
)
@_INSTANCE_DIR
@_DATABASE_URL
def report_alarm(alarm_id: int, out: Path, instance_dir: Path, database_url: str | None) -> None:
    """Write the event report of ALARM_ID as a one-page PDF (A4 landscape).

    Patient, alarm, who acknowledged it, the 10-second strip at 25 mm/s and
    10 mm/mV, the beats and their classes. The command line reads the
    database directly, as `serve` does, so it sees every alarm; the export
    is written to the audit log with the actor "cli".
    """
    from dashboard.report import export_event_report

    db = _open_database(database_url, instance_dir)
    try:
        pdf = export_event_report(db, alarm_id, actor="cli", user_id=None, role=None)
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.dispose()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(pdf)
    click.echo(f"wrote {out} ({len(pdf) / 1024:.0f} kB)")


# export and API tokens -----------------------------------------------------------


@cli.group()
def export() -> None:
    """Export patient data in standard formats."""


@export.command("fhir")
@click.option("--patient", required=True, help="Patient id, or MRN.")
@click.option("--from", "start", required=True, help="Start, ISO 8601 with a zone: 2026-01-01T12:00:00Z.")
@click.option(
    "--to", "end", required=True, help="End (excluded), ISO 8601 with a zone; at most 1 h after --from."
)
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="JSON file to write."
)
@click.option("--base-url", default=None, help="FHIR base URL for the entries' fullUrl (https://host/fhir).")
@_INSTANCE_DIR
@_DATABASE_URL
def export_fhir(
    patient: str,
    start: str,
    end: str,
    out: Path,
    base_url: str | None,
    instance_dir: Path,
    database_url: str | None,
) -> None:
    """Write a patient's data in [--from, --to) as a FHIR R4B collection Bundle (JSON).

    The Patient, the Devices, the ECG (one Observation per run of samples,
    a SampledData component per lead), vital signs, classified beats, alarm
    episodes and a DiagnosticReport per alarm; see docs/fhir.md. The export
    is written to the audit log with the actor "cli".
    """
    from sqlalchemy import select

    from storage import Patient, append_audit, export_bundle

    t_start, t_end = _aware_time(start, "--from"), _aware_time(end, "--to")
    db = _open_database(database_url, instance_dir)
    try:
        with db.session() as session:
            key = patient.strip()
            found = session.scalar(select(Patient.id).where(Patient.mrn == key))
            if found is None and key.isdigit():
                found = session.scalar(select(Patient.id).where(Patient.id == int(key)))
            if found is None:
                raise click.ClickException(f"no patient with the id or MRN {patient!r}")
            bundle = export_bundle(session, found, t_start, t_end, base_url=base_url)
            count = len(bundle.entry or [])
            append_audit(
                session,
                "cli",
                "fhir.export",
                target=f"patient:{found}",
                details={"start": t_start.isoformat(), "end": t_end.isoformat(), "count": count},
            )
            text = bundle.model_dump_json(indent=1)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.dispose()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    tmp.replace(out)
    click.echo(f"wrote {out}: {count} FHIR R4B resources of patient {found}")


@cli.group()
def token() -> None:
    """Bearer tokens of EHR systems that read the FHIR API (/fhir)."""


@token.command("add")
@click.argument("name")
@click.option("--ward", default=None, help="Only the patients of this ward (default: every patient).")
@_INSTANCE_DIR
@_DATABASE_URL
def token_add(name: str, ward: str | None, instance_dir: Path, database_url: str | None) -> None:
    """Issue a token called NAME and print it once; only its SHA-256 is stored."""
    from storage import issue_api_token

    db = _open_database(database_url, instance_dir)
    try:
        with db.session() as session:
            _, secret = issue_api_token(session, name, actor="cli", ward=ward)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.dispose()
    scope = f"ward {ward.strip()!r}" if ward and ward.strip() else "every patient"
    click.echo(f"issued API token {name.strip()!r} ({scope}); copy it now, it is not shown again:", err=True)
    click.echo(secret)


@token.command("revoke")
@click.argument("name")
@_INSTANCE_DIR
@_DATABASE_URL
def token_revoke(name: str, instance_dir: Path, database_url: str | None) -> None:
    """Revoke the token called NAME; it is refused from now on."""
    from storage import revoke_api_token

    db = _open_database(database_url, instance_dir)
    try:
        with db.session() as session:
            revoke_api_token(session, name, actor="cli")
    except LookupError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        db.dispose()
    click.echo(f"revoked API token {name.strip()!r}")


@token.command("list")
@_INSTANCE_DIR
@_DATABASE_URL
def token_list(instance_dir: Path, database_url: str | None) -> None:
    """List the tokens: name, ward, issued, last used, revoked."""
    from storage import list_api_tokens

    db = _open_database(database_url, instance_dir)
    try:
        with db.session() as session:
            for row in list_api_tokens(session):
                used = f"{row.last_used_at:%Y-%m-%d %H:%M}" if row.last_used_at else "never"
                state = f"revoked {row.revoked_at:%Y-%m-%d %H:%M}" if row.revoked_at else "live"
                click.echo(f"{row.name}\t{row.ward or '*'}\t{row.created_at:%Y-%m-%d %H:%M}\t{used}\t{state}")
    finally:
        db.dispose()


# evaluate --------------------------------------------------------------------


@cli.group()
def evaluate() -> None:
    """Measure the signal processing and the model on reference data."""


@evaluate.command("qrs")
@_DATA_DIR
@click.option("--database", default="mitdb", type=click.Choice(["mitdb", "nstdb"]), help="Database to score.")
@click.option("--records", default="all", help="Comma-separated record names, or 'all'.")
@click.option("--channel", default=0, type=click.IntRange(min=0), help="Signal column to detect on.")
@click.option("--peers", is_flag=True, help="Also score NeuroKit2 and wfdb XQRS on the same records.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None, help="PNG report.")
def evaluate_qrs_cmd(
    data_dir: Path | None,
    database: str,
    records: str,
    channel: int,
    peers: bool,
    json_path: Path,
    report: Path | None,
) -> None:
    """Score R-peak detection the ANSI/AAMI EC57 way (150 ms window)."""
    from sigproc.qrs_evaluation import evaluate_qrs, format_qrs_table, write_qrs_report
    from sigproc.records import MITDB_RECORDS, NSTDB_TEST_RECORDS

    known = MITDB_RECORDS if database == "mitdb" else NSTDB_TEST_RECORDS
    names = _records_option(records, known, database)
    result = evaluate_qrs(
        names,
        database=database,
        data_dir=data_dir,
        channel=channel,
        peers=peers,
        progress=_progress("records", "record"),
    )
    click.echo(format_qrs_table(result))
    _write_json(json_path, result)
    if report is not None:
        write_qrs_report(result, report)
        click.echo(f"report: {report}")


@evaluate.command("denoise")
@_DATA_DIR
@click.option(
    "--records", default=None, help="Clean MIT-BIH records to mix with noise (default: ten DS2 records)."
)
@click.option(
    "--segment-s", default=300.0, type=click.FloatRange(min=10.0), help="Seconds scored per record."
)
@click.option(
    "--nstdb-seconds",
    default=None,
    type=click.FloatRange(min=10.0),
    help="Score only the first seconds of each NSTDB record (default: whole records).",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), default=None, help="PNG strip plot.")
def evaluate_denoise_cmd(
    data_dir: Path | None,
    records: str | None,
    segment_s: float,
    nstdb_seconds: float | None,
    json_path: Path,
    plot: Path | None,
) -> None:
    """Score band-pass, wavelet and EMD denoising on noise-stress mixtures and NSTDB records."""
    from sigproc.denoise_evaluation import (
        MIXTURE_RECORDS,
        evaluate_denoise,
        format_denoise_table,
        write_strip_plot,
    )
    from sigproc.records import MITDB_RECORDS

    names = _records_option(records, MITDB_RECORDS, "mitdb") if records else list(MIXTURE_RECORDS)
    result = evaluate_denoise(
        data_dir=data_dir,
        records=names,
        segment_s=segment_s,
        nstdb_seconds=nstdb_seconds,
        progress=_progress("denoise", "step"),
    )
    click.echo(format_denoise_table(result))
    _write_json(json_path, result)
    if plot is not None:
        write_strip_plot(plot, data_dir=data_dir)
        click.echo(f"plot: {plot}")


@evaluate.command("folds")
@click.argument(
    "checkpoints", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path)
)
@click.option("--raw", is_flag=True, help="Weight-averaged runs: score the raw network instead.")
@click.option(
    "--from-epoch", type=click.IntRange(min=1), default=10, show_default=True, help="First epoch of the mean."
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
def evaluate_folds_cmd(
    checkpoints: tuple[Path, ...], raw: bool, from_epoch: int, json_path: Path | None
) -> None:
    """Pool leave-records-out runs (one per fold) into a per-epoch selection score.

    Each CHECKPOINT is one fold's `train --validation-records ...` run; per
    epoch their validation confusions are summed, so every held-out record is
    scored once by a network that never saw its patient.
    """
    from model.evaluation import pooled_folds

    try:
        result = pooled_folds(checkpoints, raw=raw, from_epoch=from_epoch)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="CHECKPOINTS") from exc
    click.echo("epoch  score  acc.   S Se / +P     V Se / +P")
    for r in result["epochs"]:
        s, v = r["S"], r["V"]
        click.echo(
            f"{r['epoch']:5d}  {r['score']:5.1f}  {r['accuracy']:5.1f}  "
            f"{s['se']:5.1f} / {s['ppv']:5.1f}  {v['se']:5.1f} / {v['ppv']:5.1f}"
        )
    click.echo(
        f"mean from epoch {from_epoch}: {result['mean']:.1f} +/- {result['sd']:.1f}; "
        f"best {result['best_score']:.1f} at epoch {result['best_epoch']}"
    )
    if "intervals" in result:
        ci = result["intervals"]
        lo, hi = ci["macro_f1"]
        click.echo(
            f"score of the summed epochs {from_epoch}+, {ci['level']:.0f} % interval over the "
            f"{ci['n_records']} held-out records resampled: [{lo:.1f}, {hi:.1f}]"
        )
    _write_result(result, json_path)


@evaluate.command("terms")
@_DATA_DIR
@click.option(
    "--folds",
    default=None,
    help="Records held out together: comma-separated records, folds separated by ';' "
    "(default: the four DS1 folds, model.data.DS1_FOLDS).",
)
@click.option(
    "--class-weight-power",
    type=click.FloatRange(min=0.0),
    default=1.0,
    help="Class weights (n_max / n_c) ** power, capped at 20.",
)
@click.option(
    "--test",
    "test_records",
    default="",
    help="Also fit on every fold's records and score these once: 'ds2' or comma-separated records.",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
def evaluate_terms_cmd(
    data_dir: Path | None,
    folds: str | None,
    class_weight_power: float,
    test_records: str,
    json_path: Path | None,
) -> None:
    """Score the hand-measured head terms alone on held-out DS1 folds (the networks' reference).

    A class-weighted logistic regression on the RR, irregularity and shape
    terms that `--rr-skip --rr-irregularity --shape-skip` hand to the heads,
    fitted on the other folds' records and scored on each fold, the held-out
    confusions summed like `evaluate folds`. With `--test ds2` the same
    regression fitted on all of DS1 scores DS2 once, with record-bootstrap
    intervals (a reference row for `evaluate compare`).
    """
    from model.data import DS1_FOLDS
    from model.evaluation import terms_baseline
    from sigproc.records import DS2

    fold_list = DS1_FOLDS
    if folds is not None:
        fold_list = tuple(tuple(_split(f)) for f in folds.split(";") if f.strip())
    test = list(DS2) if test_records.strip().lower() == "ds2" else _split(test_records)
    try:
        result = terms_baseline(
            fold_list, data_dir=data_dir, class_weight_power=class_weight_power, test=test
        )
    except (ValueError, FileNotFoundError) as exc:
        raise click.BadParameter(str(exc), param_hint="--folds / --test") from exc
    click.echo(f"score {result['score']:.1f} (mean F1 of N, S, V) on the held-out folds")
    _echo_classes(result)
    if "test" in result:
        click.echo(f"test records {', '.join(test)}:")
        _echo_classes(result["test"])
    _write_result(result, json_path)


def _write_result(result: dict[str, Any], json_path: Path | None) -> None:
    """Write ``result`` as JSON to ``json_path`` (and say so), if one is given."""
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(result, indent=1))
        click.echo(f"wrote {json_path}")


def _echo_classes(result: dict[str, Any]) -> None:
    """Accuracy and Se / +P / F1 of N, S, V, F, with record-bootstrap intervals where the result has them."""
    ci = result.get("intervals")

    def span(key: str, c: str | None = None) -> str:
        if ci is None:
            return ""
        lo, hi = ci[key] if c is None else ci["classes"][c][key]
        return "" if lo is None else f" [{lo:5.1f}, {hi:5.1f}]"

    click.echo(f"  accuracy {result['accuracy']:.1f}{span('accuracy')}, macro F1 {result['macro_f1']:.1f}")
    for c in ("N", "S", "V", "F"):
        m = result["classes"][c]
        click.echo(
            f"  {c}: Se {m['se']:5.1f}  +P {m['ppv']:5.1f}{span('ppv', c)}  F1 {m['f1']:5.1f}{span('f1', c)}"
        )
    if ci is not None:
        click.echo(f"  [{ci['level']:.0f} % intervals over {ci['n_records']} test records resampled]")


def _model_records(default: str) -> Any:
    """``--records`` of the out-of-fold model commands (parsed by :func:`_named_records`)."""
    return click.option(
        "--records",
        default=default,
        show_default=True,
        help="'ds1', 'ds2' or comma-separated MIT-BIH records.",
    )


_ONE_LEAD = click.option("--leads", type=click.IntRange(1, 2), default=1, show_default=True)


@evaluate.command("af")
@_DATA_DIR
@click.argument("checkpoints", nargs=-1, type=click.Path(dir_okay=False, exists=True, path_type=Path))
@_model_records("ds2")
@_ONE_LEAD
@click.option("--grid", is_flag=True, help="Also search the detector's parameters for the best Youden's J.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
def evaluate_af_cmd(
    data_dir: Path | None,
    checkpoints: tuple[Path, ...],
    records: str,
    leads: int,
    grid: bool,
    json_path: Path | None,
) -> None:
    """Score the AF gate's atrial-fibrillation calls against the MIT-BIH rhythm annotations.

    Each record is classified by the first of CHECKPOINTS (default: the
    shipped weights) not trained on it: the four fold networks of DS1 give
    out-of-fold calls on DS1, the shipped weights score DS2.
    """
    from model.inference import SHIPPED_WEIGHTS
    from model.rhythm_evaluation import evaluate_af

    try:
        result = evaluate_af(
            list(checkpoints) or [SHIPPED_WEIGHTS],
            _named_records(records),
            data_dir=data_dir,
            leads=leads,
            grid=grid,
        )
    except (ValueError, FileNotFoundError) as exc:
        raise click.BadParameter(str(exc), param_hint="CHECKPOINTS / --records") from exc
    click.echo(f"detector {result['detector']}")
    click.echo("record  AF beats  called   other beats  called  S beats called")
    for name, r in result["records"].items():
        click.echo(
            f"{name:>6}  {r['af_beats']:8d}  {r['af_called']:6d}  {r['other_beats']:12d}  "
            f"{r['other_called']:6d}  {r['s_beats_called']:14d}"
        )
    p = result["pooled"]
    se, fpr = ("n/a" if p[k] is None else f"{p[k]:.2f} %" for k in ("se", "fpr"))
    click.echo(f"pooled: AF sensitivity {se}, other beats called AF {fpr}, Youden's J {p['j']}")
    for row in result.get("grid", [])[:10]:
        click.echo(
            f"  J {row['j']:.3f}  lags {row['lags']} window {row['window']} threshold {row['threshold']:.3f}"
            f"  Se {row['se']:.1f}  other called {row['other_called']}"
        )
    _write_result(result, json_path)


@evaluate.command("oof")
@_DATA_DIR
@click.argument(
    "checkpoints", nargs=-1, required=True, type=click.Path(dir_okay=False, exists=True, path_type=Path)
)
@_model_records("ds1")
@_ONE_LEAD
@click.option("--af-gate/--no-af-gate", default=None, help="Default: as each checkpoint says (see `gate`).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
def evaluate_oof_cmd(
    data_dir: Path | None,
    checkpoints: tuple[Path, ...],
    records: str,
    leads: int,
    af_gate: bool | None,
    json_path: Path | None,
) -> None:
    """Classify each record with the first of CHECKPOINTS not trained on it (out of fold).

    With the four fold networks of DS1 (`train --records`, each without one
    fold of model.data.DS1_FOLDS) every DS1 patient is scored by a network
    that never saw it; `evaluate compare` pairs two such results by record.
    """
    from model.evaluation import evaluate_out_of_fold

    try:
        result = evaluate_out_of_fold(
            list(checkpoints), _named_records(records), data_dir=data_dir, leads=leads, af_gate=af_gate
        )
    except (ValueError, FileNotFoundError) as exc:
        raise click.BadParameter(str(exc), param_hint="CHECKPOINTS / --records") from exc
    click.echo(f"{len(result['test_records'])} records, {leads} lead(s), out of fold:")
    _echo_classes(result)
    _write_result(result, json_path)


@evaluate.command("compare")
@click.argument("candidate", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.argument("baseline", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--leads", type=click.IntRange(1, 2), default=1, help="Which lead count of the results.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
def evaluate_compare_cmd(candidate: Path, baseline: Path, leads: int, json_path: Path | None) -> None:
    """Is CANDIDATE ahead of BASELINE on DS2 beyond the luck of which patients were tested?

    Both are JSON results of `evaluate model --protocol inter-patient` (or
    `evaluate terms --test ds2`) on the same records, or two `evaluate folds`
    results of runs that kept each record's confusion (macro_f1 is then the
    fold score). The records are resampled together, and each difference
    gets a 95 % interval and the share of resamples in which the candidate
    is ahead.
    """
    from model.evaluation import compare_results

    try:
        a, b = (json.loads(p.read_text()) for p in (candidate, baseline))
        result = compare_results(a, b, leads=leads)
    except (ValueError, json.JSONDecodeError) as exc:
        raise click.BadParameter(str(exc), param_hint="CANDIDATE / BASELINE") from exc
    d = result["difference"]
    what = "DS1 folds" if result["macro_f1_classes"] == ["N", "S", "V"] else f"{leads} lead(s)"
    click.echo(f"{what}, {len(result['records'])} records: candidate, baseline, difference [95 % interval]")

    def pick(block: dict[str, Any], key: str, c: str | None) -> Any:
        return block[key] if c is None else block["classes"][c][key]

    rows = [("accuracy", None), ("macro_f1", None)] + [
        (k, c) for c in ("S", "V") for k in ("se", "ppv", "f1")
    ]
    for key, c in rows:
        va, vb = pick(result["candidate"], key, c), pick(result["baseline"], key, c)
        lo, hi = pick(d, key, c)
        ahead = pick(d["share_ahead"], key, c)
        share = f", ahead in {100 * ahead:.1f} % of resamples"
        label = key if c is None else f"{c} {key}"
        span = "[n/a]" if lo is None else f"[{lo:+6.1f}, {hi:+6.1f}]"
        click.echo(f"  {label:9s} {va:6.1f} {vb:6.1f} {va - vb:+6.1f} {span}{share}")
    _write_result(result, json_path)


@evaluate.command("model")
@_DATA_DIR
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="Checkpoint to evaluate (default: the shipped weights).",
)
@click.option(
    "--protocol",
    type=click.Choice(["inter-patient", "random", "cv"]),
    default="inter-patient",
    help="inter-patient: shipped/given model on DS2; random, cv: train and compare CNN, LSTM, CNN+LSTM.",
)
@click.option(
    "--leads", type=click.IntRange(1, 2), default=None, help="Evaluate on 1 or 2 leads (default both)."
)
@click.option("--device-fs", type=float, default=None, help="Resample the records to this rate first.")
@click.option(
    "--max-epochs", type=click.IntRange(min=1), default=50, help="Epoch cap for random / cv training."
)
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"))
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option(
    "--figure", type=click.Path(dir_okay=False, path_type=Path), default=None, help="Confusion PNG."
)
@click.option(
    "--dropout",
    type=click.FloatRange(0.0, 1.0, max_open=True),
    default=None,
    help="random / cv: dropout of the three models (default: the paper's 0.3).",
)
@click.option(
    "--lr",
    type=click.FloatRange(0.0, min_open=True),
    default=None,
    help="random / cv: learning rate of the three models (default: the paper's 1e-3).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="random / cv: batch of the three models (default: the paper's 64).",
)
@click.option(
    "--peaks",
    type=click.Choice(["reference", "detector"]),
    default="reference",
    show_default=True,
    help="inter-patient: beats at the reference annotations, or end to end at the detector's R peaks.",
)
@click.option(
    "--jobs",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="random / cv: runs trained at once, one thread each. Finished runs in --out-dir are reused.",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="random / cv: another `train` setting of the three models, e.g. lead-dropout=0 (repeatable).",
)
@click.option(
    "--af-gate/--no-af-gate",
    default=None,
    help="inter-patient: no S calls in atrial fibrillation found from the RR intervals "
    "(sigproc.rhythm). Default: as the checkpoint says (the shipped weights gate).",
)
@click.option(
    "--noise",
    type=click.Choice(["ma", "bw", "em"]),
    default=None,
    help="inter-patient: mix this NSTDB noise (muscle, baseline wander, electrode motion) "
    "into every DS2 record; needs --snr.",
)
@click.option("--snr", "snr_db", type=float, default=None, help="SNR of --noise in dB (e.g. 12, 6, 0).")
def evaluate_model_cmd(
    data_dir: Path | None,
    checkpoint: Path | None,
    protocol: str,
    leads: int | None,
    device_fs: float | None,
    max_epochs: int,
    out_dir: Path,
    json_path: Path,
    figure: Path | None,
    dropout: float | None,
    lr: float | None,
    batch_size: int | None,
    peaks: str,
    jobs: int,
    settings: tuple[str, ...],
    af_gate: bool | None,
    noise: str | None,
    snr_db: float | None,
) -> None:
    """Evaluate beat classification (AAMI N, S, V, F, Q) the EC57 way."""
    from model.data import PreprocessConfig
    from model.evaluation import compare_models, evaluate_model
    from model.training import TrainConfig

    overrides = _train_overrides(settings)
    if overrides and protocol == "inter-patient":
        raise click.BadParameter("training settings apply to --protocol random or cv", param_hint="--set")
    if af_gate and protocol != "inter-patient":
        raise click.BadParameter("the AF gate applies to --protocol inter-patient", param_hint="--af-gate")
    if (noise is None) != (snr_db is None):
        raise click.BadParameter("--noise and --snr go together", param_hint="--noise / --snr")
    if noise is not None and protocol != "inter-patient":
        raise click.BadParameter("noise applies to --protocol inter-patient", param_hint="--noise")
    json_path.parent.mkdir(parents=True, exist_ok=True)
    if protocol == "inter-patient":
        result = evaluate_model(
            checkpoint,
            protocol=protocol,
            data_dir=data_dir,
            leads=leads,
            json_path=json_path,
            figure_path=figure,
            device_fs=device_fs,
            peaks=peaks,
            af_gate=af_gate,
            noise=noise,
            snr_db=snr_db,
        )
    else:
        chosen: dict[str, Any] = {"dropout": dropout, "lr": lr, "batch_size": batch_size}
        chosen = {k: v for k, v in chosen.items() if v is not None}
        if clash := sorted(set(chosen) & set(overrides)):
            raise click.BadParameter(
                f"{', '.join(clash)} given twice (as an option and in --set)", param_hint="--set"
            )
        try:
            config = TrainConfig(data_dir=str(data_dir) if data_dir else "", **chosen, **overrides)
            config.model_config(PreprocessConfig(n_leads=config.n_leads))  # the network's own checks
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--set") from exc
        result = compare_models(
            config, protocol=protocol, out_dir=out_dir, max_epochs=max_epochs, json_path=json_path, jobs=jobs
        )
    if protocol == "inter-patient":
        for n, res in result["by_leads"].items():
            click.echo(f"DS2, {n} lead(s):")
            _echo_classes(res)
    summary: dict[str, Any] = {k: result[k] for k in ("protocol", "accuracy", "macro_f1") if k in result}
    if "table" in result:
        summary["table"] = {
            m: {k: round(row[k], 2) for k in ("accuracy", "macro_f1") if k in row}
            for m, row in result["table"].items()
        }
    click.echo(json.dumps(summary))
    click.echo(f"wrote {json_path}")


@evaluate.command("paper")
@_DATA_DIR
@click.option(
    "--candidates",
    "candidates_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    required=True,
    help='JSON {"name": {"setting": value, ...}, ...}: `train` settings each model chooses from.',
)
@click.option("--max-epochs", type=click.IntRange(min=1), default=50, show_default=True, help="Epoch cap.")
@click.option("--out-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/paper"))
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option(
    "--jobs",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Runs trained at once, one process and thread each (on the GPU when present). "
    "Finished runs in --out-dir are reused.",
)
@click.option(
    "--set",
    "settings",
    multiple=True,
    metavar="KEY=VALUE",
    help="A `train` setting of every candidate (repeatable; a candidate's own value wins).",
)
def evaluate_paper_cmd(
    data_dir: Path | None,
    candidates_path: Path,
    max_epochs: int,
    out_dir: Path,
    json_path: Path,
    jobs: int,
    settings: tuple[str, ...],
) -> None:
    """The paper's Tables 3 and 4, each model at the candidate its validation beats prefer.

    Every candidate is trained for CNN+LSTM, CNN and LSTM on the random
    80:10:10 split; each model keeps the one with the best validation score
    (the test tenth is never looked at to choose); then Table 3 on the test
    tenth and Table 4 by 5-fold cross-validation with paired t-tests.
    `--set select_on=N,S,V,F` ranks candidates, and stops every run, on the
    tables' own macro F1 instead of the default mean F1 of N, S and V.
    """
    from model.evaluation import check_candidates, paper_protocol
    from model.training import TrainConfig

    try:
        raw = json.loads(candidates_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{candidates_path}: not JSON ({exc})", param_hint="--candidates") from None
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, dict) for v in raw.values()):
        raise click.BadParameter(
            f'{candidates_path}: expected {{"name": {{"setting": value}}, ...}}', param_hint="--candidates"
        )
    candidates: dict[str, dict[str, Any]] = {}
    for name, values in raw.items():
        pairs = [f"{k}={_setting_text(v)}" for k, v in values.items()]
        try:
            candidates[str(name)] = _train_overrides(tuple(pairs))
        except click.BadParameter as exc:
            message = f"candidate {name!r}: {exc.message}"
            raise click.BadParameter(message, param_hint="--candidates") from None
    try:
        config = TrainConfig(data_dir=str(data_dir) if data_dir else "", **_train_overrides(settings))
        check_candidates(config, candidates)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--candidates / --set") from exc
    result = paper_protocol(
        config, candidates, out_dir=out_dir, max_epochs=max_epochs, json_path=json_path, jobs=jobs
    )
    click.echo(f"chosen on validation: {json.dumps(result['chosen'])}")
    for key in ("random", "cv"):
        rows = result[key]["table"].items()
        table = {m: {k: round(row[k], 2) for k in ("accuracy", "macro_f1")} for m, row in rows}
        click.echo(f"{key}: {json.dumps(table)}")
    for base, tests in result["cv"].get("t_tests", {}).items():
        click.echo(f"cnn_lstm - {base}: " + ", ".join(f"{k} p={t['p']:.3g}" for k, t in tests.items()))
    click.echo(f"wrote {json_path}")


def _setting_text(value: Any) -> str:
    """A JSON value as `--set` text: lists comma-separated, booleans true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


# keys, storage, purge ----------------------------------------------------------


@cli.group()
def keys() -> None:
    """Data keys of the encryption at rest (see docs/security.md)."""


@keys.command("generate")
def keys_generate() -> None:
    """Print a new random data key (base64) for CARDIAC_DATA_KEY; its id goes to stderr."""
    from storage import DataCipher, generate_data_key

    key = generate_data_key()
    click.echo(key)
    click.echo(f"key id {DataCipher.from_text([key], source='the new key').key_id}", err=True)


@keys.command("rotate")
@click.option("--batch", default=100, type=click.IntRange(min=1), help="Chunks re-encrypted per transaction.")
@_INSTANCE_DIR
@_DATABASE_URL
def keys_rotate(batch: int, instance_dir: Path, database_url: str | None) -> None:
    """Re-encrypt every chunk and note that is not under the current data key.

    Set the new key in CARDIAC_DATA_KEY and the old one(s) in
    CARDIAC_DATA_KEY_PREVIOUS (embedded default: new key on the first line of
    the instance folder's data_key file, old ones below), then run this.
    Interrupted, run it again: it carries on. Audited as keys.rotate.
    """
    from storage import rotate_keys

    db = _open_database(database_url, instance_dir)
    try:
        result = rotate_keys(db, batch=batch, progress=_progress("rotate", "batch"), actor="cli")
    finally:
        db.dispose()
    click.echo(f"{result.chunks} chunk(s) and {result.notes} note(s) re-encrypted under key {result.key_id}")
    _fail_on_problems(result.problems, result.problem_count, "could not be re-encrypted (left as they are)")


@cli.group("storage")
def storage_group() -> None:
    """Integrity of the stored data."""


@storage_group.command("verify")
@click.option("--batch", default=200, type=click.IntRange(min=1), help="Chunks read per transaction.")
@click.option("--strict", is_flag=True, help="Also fail when chunks or notes are stored in clear.")
@_INSTANCE_DIR
@_DATABASE_URL
def storage_verify(batch: int, strict: bool, instance_dir: Path, database_url: str | None) -> None:
    """Read back every signal chunk and note; exit 1 if any is tampered with or undecryptable."""
    from storage import verify_storage

    db = _open_database(database_url, instance_dir)
    try:
        result = verify_storage(db, batch=batch, progress=_progress("verify", "batch"), actor="cli")
    finally:
        db.dispose()
    click.echo(
        f"checked {result.chunks} chunk(s) ({result.clear_chunks} in clear) and "
        f"{result.notes} note(s) ({result.clear_notes} in clear)"
    )
    _fail_on_problems(result.problems, result.problem_count, "are not intact")
    if strict and (result.clear_chunks or result.clear_notes):
        raise click.ClickException("data is stored in clear; run `cardiac-monitor keys rotate`")


@cli.command()
@click.option(
    "--before",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]),
    default=None,
    help="Delete data older than this date (UTC).",
)
@click.option(
    "--older-than-days",
    "--retention-days",
    "older_than_days",
    type=click.IntRange(min=1),
    default=None,
    envvar="CARDIAC_RETENTION_DAYS",
    help="Retention period: delete data older than N days.",
)
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option("--batch", default=1000, type=click.IntRange(min=1), help="Rows deleted per transaction.")
@_INSTANCE_DIR
@_DATABASE_URL
def purge(
    before: Any,
    older_than_days: int | None,
    dry_run: bool,
    batch: int,
    instance_dir: Path,
    database_url: str | None,
) -> None:
    """Delete signal chunks, beats, vitals and resolved alarms older than the cutoff.

    The audit log is never purged; the purge is recorded in it (data.purge)
    with the counts. Run it daily (cron, systemd timer) with
    CARDIAC_RETENTION_DAYS set.
    """
    from datetime import UTC, datetime

    from storage import purge_expired, retention_cutoff

    from_env = click.get_current_context().get_parameter_source("older_than_days")
    if before is not None and older_than_days is not None:
        if from_env is not click.core.ParameterSource.ENVIRONMENT:
            raise click.UsageError("give either --before or --older-than-days, not both")
        older_than_days = None  # an explicit date wins over CARDIAC_RETENTION_DAYS
    if before is not None:
        cutoff = before.replace(tzinfo=UTC)
        if cutoff > datetime.now(UTC):
            raise click.BadParameter(f"must be in the past, got {cutoff.isoformat()}", param_hint="--before")
    elif older_than_days is not None:
        cutoff = retention_cutoff(older_than_days)
    else:
        raise click.UsageError("give --before DATE or --older-than-days N (or set CARDIAC_RETENTION_DAYS)")
    db = _open_database(database_url, instance_dir)
    try:
        result = purge_expired(
            db, cutoff, dry_run=dry_run, batch=batch, progress=_progress("purge", "batch"), actor="cli"
        )
    finally:
        db.dispose()
    verb = "would delete" if dry_run else "deleted"
    counts = ", ".join(f"{n} {table}" for table, n in result.counts.items())
    click.echo(f"{verb} {counts} older than {cutoff.isoformat()}")


# bench -----------------------------------------------------------------------


@cli.group()
def bench() -> None:
    """Benchmarks that print JSON (never part of the test run)."""


@bench.command("ingest")
@click.option("--streams", default=10, type=click.IntRange(min=1), help="Concurrent replay devices.")
@click.option(
    "--seconds", default=60.0, type=click.FloatRange(min=5.0), help="Seconds of real-time streaming."
)
@click.option(
    "--workers", default=0, type=click.IntRange(min=0), help="Analysis worker processes (0: in-server)."
)
@click.option("--display-only", is_flag=True, help="Measure ingest and display without beat analysis.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None)
@_DATA_DIR
def bench_ingest(
    streams: int,
    seconds: float,
    workers: int,
    display_only: bool,
    json_path: Path | None,
    data_dir: Path | None,
) -> None:
    """Load test: N real-time MIT-BIH devices; samples lost, beat latency to /live, CPU, memory."""
    from ingest.bench import run_ingest_bench

    result = run_ingest_bench(
        streams, seconds, json_path, data_dir=data_dir, analysis=not display_only, workers=workers
    )
    click.echo(json.dumps(result))


# Internals -------------------------------------------------------------------


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _named_records(value: str) -> list[str]:
    """``--records`` of the model commands: 'ds1', 'ds2' or comma-separated MIT-BIH records."""
    from sigproc.records import DS1, DS2, MITDB_RECORDS

    named = {"ds1": list(DS1), "ds2": list(DS2)}
    return named.get(value.strip().lower()) or _records_option(value, MITDB_RECORDS, "mitdb")


def _records_option(value: str, known: Sequence[str], database: str) -> list[str]:
    """Parse ``--records``: 'all' or a comma list of names the database has."""
    if value.strip().lower() == "all":
        return list(known)
    names = _split(value)
    if not names:
        raise click.BadParameter("give at least one record name, or 'all'", param_hint="--records")
    unknown = [n for n in names if n not in known]
    if unknown:
        raise click.BadParameter(
            f"{database} has no record(s) {', '.join(unknown)}; known: {', '.join(known)}",
            param_hint="--records",
        )
    return names


def _open_database(database_url: str | None, instance_dir: Path) -> Any:
    """The database (``DATABASE_URL`` or SQLite in the instance folder), migrated to head.

    The caller disposes of it; a failed migration disposes of it here.
    """
    from storage import Database, upgrade

    instance_dir.mkdir(parents=True, exist_ok=True)
    db = Database()
    db.init(database_url, instance_path=instance_dir)
    try:
        upgrade(db.engine)
    except BaseException:
        db.dispose()
        raise
    return db


def _aware_time(text: str, option: str) -> Any:
    """An ISO 8601 time with a zone (``Z`` or ``+hh:mm``), as an aware datetime."""
    from datetime import datetime

    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise click.BadParameter(
            f"must be ISO 8601 such as 2026-01-01T12:00:00Z, got {text!r}", param_hint=option
        ) from exc
    if value.tzinfo is None or value.utcoffset() is None:
        raise click.BadParameter(f"must carry a zone (Z or +hh:mm), got {text!r}", param_hint=option)
    return value


def _progress(desc: str, unit: str) -> Any:
    """A tqdm progress bar over an iterable, for the evaluation runners."""
    from tqdm import tqdm

    return lambda items: tqdm(list(items), desc=desc, unit=unit)


def _fail_on_problems(problems: Sequence[Any], count: int, outcome: str) -> None:
    """List stored values that failed (the first 50) and exit 1, if there are any."""
    for problem in problems[:50]:
        click.echo(f"{problem.kind}: {problem.message}", err=True)
    if count > 50:
        click.echo(f"... and {count - 50} more", err=True)
    if count:
        raise click.ClickException(f"{count} chunk(s) or note(s) {outcome}")


def _write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as JSON atomically (temp file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    tmp.replace(path)
    click.echo(f"wrote {path}")


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point; data and input errors exit with status 2."""
    from sigproc.records import DataNotFoundError

    try:
        cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.Abort:
        click.echo("Aborted.", err=True)
        sys.exit(1)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (DataNotFoundError, ValueError) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
