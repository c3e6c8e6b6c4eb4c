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
            types: dict[str, Any] = {"int": int, "float": float, "str": str}
            func = click.option(name, f.name, type=types.get(kind, str), default=default, show_default=True)(
                func
            )
    return func


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

    from model.training import TrainConfig, grid_search
    from model.training import train as train_model

    values: dict[str, Any] = {}
    for f in dataclasses.fields(TrainConfig):
        value = fields[f.name]
        if str(f.type).startswith("tuple"):
            items = _split(value)
            value = tuple(int(v) for v in items) if "int" in str(f.type) else tuple(items)
        values[f.name] = value
    config = TrainConfig(**values)
    out.parent.mkdir(parents=True, exist_ok=True)
    if grid:
        rows = grid_search(config, out_csv=out.with_suffix(".csv"), max_epochs=grid_epochs)
        click.echo(f"best of {len(rows)} settings: {rows[0] if rows else 'none'}")
        click.echo(f"wrote {out.with_suffix('.csv')}")
    else:
        summary = train_model(config, out=out, progress=True)
        val = summary.get("validation", {})
        click.echo(
            f"best epoch {summary.get('best_epoch')} of {summary.get('epochs_run')} "
            f"in {summary.get('train_seconds', 0.0):.0f} s; validation accuracy "
            f"{val.get('accuracy', float('nan')):.2f} %, macro F1 {val.get('macro_f1', float('nan')):.2f}"
        )
        click.echo(f"wrote {out}")


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
    data_dir: Path | None,
) -> None:
    """Run the dashboard and the ingest/live WebSocket server until SIGTERM (Ctrl-C).

    The first user is created with `cardiac-monitor user add NAME --role admin`;
    there is no default account.
    """
    import logging
    import os
    import secrets

    from dashboard import create_app, run_dashboard
    from ingest.pipeline import AnalysisProcessor
    from ingest.server import ServeOptions, run_server
    from sigproc.records import MITDB_RECORDS

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

    db = _open_database(database_url, instance_dir)
    dash_app = create_app(database=db, instance_path=instance_dir, live_url=live_url, live_secret=live_secret)
    web = run_dashboard(dash_app, host=host, port=port)
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
    )
    click.echo(f"dashboard on {web.url} ; ingest on ws://{host}:{ingest_port} ; state in {instance_dir}")
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
@click.option("--server", default="ws://127.0.0.1:8765", help="URL of the ingest server.")
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
    instance_dir: Path,
    database_url: str | None,
    data_dir: Path | None,
) -> None:
    """Stream MIT-BIH records to a server through the device protocol, as a NodeMCU would.

    The replay devices are registered (with fresh tokens) in the server's
    database, so give the same --instance-dir or --database-url as `serve`.
    """
    import asyncio

    from ingest.replay import ensure_replay_devices, run_replay
    from sigproc.records import MITDB_RECORDS

    names = _records_option(records, MITDB_RECORDS, "mitdb")
    noise_type: Literal["ma", "bw"] | None = "ma" if noise == "ma" else "bw" if noise == "bw" else None
    db = _open_database(database_url, instance_dir)
    try:
        tokens = ensure_replay_devices(db, names)
    finally:
        db.dispose()
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
        )
    )
    for r in results:
        state = "all acknowledged" if r.acked else "NOT all acknowledged"
        click.echo(
            f"{r.record}: {r.samples} samples in {r.frames} frames, {state}; "
            f"{r.reconnects} reconnect(s), {r.frames_resent} frame(s) resent, {r.dropped_frames} dropped"
        )
    if not all(r.acked for r in results):
        raise click.ClickException("some samples were not acknowledged by the server")


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
) -> None:
    """Evaluate beat classification (AAMI N, S, V, F, Q) the EC57 way."""
    from model.evaluation import compare_models, evaluate_model
    from model.training import TrainConfig

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
        )
    else:
        config = TrainConfig(data_dir=str(data_dir) if data_dir else "")
        result = compare_models(
            config, protocol=protocol, out_dir=out_dir, max_epochs=max_epochs, json_path=json_path
        )
    click.echo(json.dumps({k: result[k] for k in ("protocol", "accuracy", "macro_f1") if k in result}))
    click.echo(f"wrote {json_path}")


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


def _progress(desc: str, unit: str) -> Any:
    """A tqdm progress bar over an iterable, for the evaluation runners."""
    from tqdm import tqdm

    return lambda items: tqdm(list(items), desc=desc, unit=unit)


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
