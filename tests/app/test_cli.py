"""The `cardiac-monitor` command line: parsing, environment variables, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from app import _records_option, cli, main


class TestCli:
    def test_help_lists_commands(self) -> None:
        result = CliRunner().invoke(cli, ["--help"])
        assert result.exit_code == 0
        for command in ("data", "evaluate"):
            assert command in result.output

    def test_data_where(self, tmp_path: Path) -> None:
        result = CliRunner().invoke(cli, ["data", "where", "--data-dir", str(tmp_path)])
        assert result.exit_code == 0
        assert f"search order: {tmp_path}" in result.output
        assert "mitdb: missing" in result.output

    def test_env_var_sets_option(self, tmp_path: Path) -> None:
        env = {"CARDIAC_DATA_WHERE_DATA_DIR": str(tmp_path)}
        result = CliRunner().invoke(cli, ["data", "where"], env=env)
        assert f"search order: {tmp_path}" in result.output

    def test_records_option(self) -> None:
        assert _records_option("all", ("100", "101"), "mitdb") == ["100", "101"]
        assert _records_option(" 101 ,100", ("100", "101"), "mitdb") == ["101", "100"]

    def test_exceptions(self) -> None:
        import click

        with pytest.raises(click.BadParameter, match="mitdb has no record"):
            _records_option("100,999", ("100",), "mitdb")
        with pytest.raises(click.BadParameter, match="at least one record"):
            _records_option(" , ", ("100",), "mitdb")


class TestEvaluateQrsCli:
    def test_missing_data_exits_with_message(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        out = tmp_path / "qrs.json"
        with pytest.raises(SystemExit) as exc:
            main(["evaluate", "qrs", "--data-dir", str(tmp_path), "--records", "100", "--json", str(out)])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "ECG_DATA_DIR" in err
        assert "cardiac-monitor data fetch mitdb" in err
        assert not out.exists()

    def test_unknown_record(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exc:
            main(["evaluate", "qrs", "--records", "999", "--json", str(tmp_path / "q.json")])
        assert exc.value.code == 2
        assert "mitdb has no record(s) 999" in capsys.readouterr().err

    def test_basic(self, data_dir: Path, tmp_path: Path) -> None:
        out = tmp_path / "qrs.json"
        report = tmp_path / "qrs.png"
        args = ["evaluate", "qrs", "--data-dir", str(data_dir), "--records", "100"]
        result = CliRunner().invoke(cli, [*args, "--json", str(out), "--report", str(report)])
        assert result.exit_code == 0, result.output
        payload = json.loads(out.read_text())
        assert set(payload["gross"]) >= {"tp", "fn", "fp", "se", "ppv", "der", "mean_abs_error_ms"}
        assert payload["gross"]["tp"] + payload["gross"]["fn"] == 2273
        assert payload["gross"]["se"] > 99.0
        assert report.stat().st_size > 1000


class TestEvaluateDenoiseCli:
    def test_basic(self, data_dir: Path, tmp_path: Path) -> None:
        out, plot = tmp_path / "denoise.json", tmp_path / "strip.png"
        args = ["evaluate", "denoise", "--data-dir", str(data_dir), "--records", "100"]
        args += ["--segment-s", "20", "--nstdb-seconds", "30", "--json", str(out), "--plot", str(plot)]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        payload = json.loads(out.read_text())
        assert set(payload["snr_improvement_db"]) >= {"bandpass", "wavelet", "emd"}
        assert set(payload["qrs_nstdb"]) == {"118e24", "118e12", "118e00", "118e_6"}
        assert payload["snr_improvement_db"]["bandpass"]["ma"]["0"] > 3.0
        assert plot.stat().st_size > 1000


class TestServeAndReplayCli:
    """`serve` in a real subprocess, `replay` through the CLI against it, SIGTERM to stop."""

    def test_basic(self, data_dir: Path, tmp_path: Path) -> None:
        import signal
        import socket
        import subprocess
        import sys
        import time
        import urllib.request

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        instance = tmp_path / "instance"
        cmd = [sys.executable, "-m", "app", "serve", "--ingest-port", str(port), "--port", "0"]
        server = subprocess.Popen(
            [*cmd, "--instance-dir", str(instance)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as response:
                        assert json.loads(response.read())["status"] == "ok"
                    break
                except OSError:
                    assert server.poll() is None, "server exited early"
                    assert time.monotonic() < deadline, "server did not come up"
                    time.sleep(0.2)
            args = ["replay", "--records", "100", "--speed", "0", "--seconds", "5"]
            args += ["--server", f"ws://127.0.0.1:{port}", "--instance-dir", str(instance)]
            args += ["--data-dir", str(data_dir)]
            result = CliRunner().invoke(cli, args)
            assert result.exit_code == 0, result.output
            assert "100: 1800 samples" in result.output
            assert "all acknowledged" in result.output
        finally:
            server.send_signal(signal.SIGTERM)
            output, _ = server.communicate(timeout=30)
        assert server.returncode == 0, output.decode()
        assert (instance / "cardiac-monitor.db").exists()


class TestTrainCli:
    def test_tiny_run_writes_a_checkpoint(self, data_dir: Path, tmp_path: Path) -> None:
        out = tmp_path / "tiny.pt"
        args = ["train", "--records", "101,106", "--validation-records", "118", "--epochs", "1"]
        args += ["--max-batches", "2", "--threads", "1", "--data-dir", str(data_dir), "--out", str(out)]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert "best epoch 1 of 1" in result.output
        assert out.stat().st_size > 10_000

    def test_refit_on_every_record(self, data_dir: Path, tmp_path: Path) -> None:
        out = tmp_path / "refit.pt"
        args = ["train", "--records", "101,106", "--validation-records", "", "--epochs", "2", "--augment"]
        args += ["--max-batches", "2", "--threads", "1", "--data-dir", str(data_dir), "--out", str(out)]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert "refitted for 2 epochs" in result.output

    def test_exceptions(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        with pytest.raises(SystemExit) as exc:
            main(["train", "--validation-records", "100", "--epochs", "1", "--out", str(tmp_path / "x.pt")])
        assert exc.value.code == 2
        assert "must come from DS1" in capsys.readouterr().err

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["--class-weight-caps", "20,1"], "`class_weight_caps` needs one cap per class"),
            (["--class-weight-caps", "20,x,1,1,1"], "'20,x,1,1,1' is not a comma-separated tuple"),
            (["--shape-skip"], "`shape_skip` needs `rr_skip`"),
        ],
    )
    def test_bad_settings(self, args: list[str], message: str, tmp_path: Path) -> None:
        """Named before any data is read or anything is written."""
        out = tmp_path / "x.pt"
        result = CliRunner().invoke(cli, ["train", *args, "--out", str(out)])
        assert result.exit_code == 2
        assert message in result.output.replace("\n", " ")
        assert not out.exists()


class TestUserCli:
    def test_basic(self, tmp_path: Path) -> None:
        args = ["user", "add", "alice", "--role", "admin", "--instance-dir", str(tmp_path)]
        result = CliRunner().invoke(cli, args, input="correct horse battery\ncorrect horse battery\n")
        assert result.exit_code == 0, result.output
        assert "created admin 'alice'" in result.output
        from storage import Database, User

        db = Database()
        db.init(None, instance_path=tmp_path)
        try:
            with db.session() as session:
                stored = session.query(User).filter_by(username="alice").one()
                assert stored.password_hash.startswith("$argon2")
                assert "correct horse" not in stored.password_hash
        finally:
            db.dispose()

    def test_exceptions(self, tmp_path: Path) -> None:
        base = ["user", "add", "bob", "--role", "clinician", "--instance-dir", str(tmp_path)]
        short = CliRunner().invoke(cli, [*base, "--password", "short"])
        assert short.exit_code == 1
        assert "10 characters" in short.output
        env = {"CARDIAC_USER_ADD_PASSWORD": "a long enough secret"}
        assert CliRunner().invoke(cli, base, env=env).exit_code == 0
        again = CliRunner().invoke(cli, base, env=env)
        assert again.exit_code == 1
        assert "bob" in again.output

    def test_ward(self, tmp_path: Path) -> None:
        args = ["user", "add", "carol", "--role", "clinician", "--ward", "Cardiology"]
        args += ["--instance-dir", str(tmp_path), "--password", "a long enough secret"]
        assert CliRunner().invoke(cli, args).exit_code == 0
        from storage import Database, User

        db = Database()
        db.init(None, instance_path=tmp_path)
        try:
            with db.session() as session:
                assert session.query(User).filter_by(username="carol").one().ward == "Cardiology"
        finally:
            db.dispose()


def _random_comparison(tmp_path: Path) -> list[str]:
    """`evaluate model` arguments of a random-split comparison at lr 1e-2."""
    return ["evaluate", "model", "--protocol", "random", "--json", str(tmp_path / "t.json"), "--lr", "0.01"]


class TestTrainOverrides:
    """`evaluate model --set KEY=VALUE`: other training settings for the comparison runs."""

    def test_basic(self) -> None:
        from app import _train_overrides

        got = _train_overrides(
            (
                "lead-dropout=0",
                "conv_channels=64",
                "rr_skip=yes",
                "rr-mode=relative",
                "horizons=1,2",
                "class-weight-caps=20, 20,5,1,1",
            )
        )
        assert got == {
            "lead_dropout": 0.0,
            "conv_channels": 64,
            "rr_skip": True,
            "rr_mode": "relative",
            "horizons": (1, 2),
            "class_weight_caps": (20.0, 20.0, 5.0, 1.0, 1.0),
        }
        assert isinstance(got["lead_dropout"], float)

    def test_cli_passes_settings(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import model.evaluation

        seen: dict[str, object] = {}

        def fake_compare(config: object, **kw: object) -> dict[str, object]:
            seen["config"], seen["kw"] = config, kw
            return {"protocol": "random", "accuracy": 1.0, "macro_f1": 1.0}

        monkeypatch.setattr(model.evaluation, "compare_models", fake_compare)
        args = _random_comparison(tmp_path)
        result = CliRunner().invoke(cli, [*args, "--set", "lead-dropout=0", "--set", "conv-channels=64"])
        assert result.exit_code == 0, result.output
        cfg = seen["config"]
        assert (cfg.lead_dropout, cfg.conv_channels, cfg.lr, cfg.dropout) == (0.0, 64, 0.01, 0.3)  # type: ignore[attr-defined]

    @pytest.mark.parametrize(
        ("setting", "message"),
        [
            ("lead-dropout", "expected KEY=VALUE, got 'lead-dropout'"),
            ("colour=red", "unknown training setting 'colour'"),
            ("model=cnn", "'model' is set by the comparison itself"),
            ("conv-channels=wide", "conv_channels: 'wide' is not a valid int"),
            ("rr-skip=maybe", "rr_skip: 'maybe' is not a valid bool"),
            ("lr=0.1", "lr given twice"),
            ("rr-skip=1", "`rr_skip` needs `rr_mode='relative'`"),
        ],
    )
    def test_exceptions(self, setting: str, message: str, tmp_path: Path) -> None:
        args = _random_comparison(tmp_path)
        result = CliRunner().invoke(cli, [*args, "--set", setting])
        assert result.exit_code == 2
        assert message in result.output.replace("\n", " ")
        assert not (tmp_path / "t.json").exists()

    def test_paper_cli(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """`evaluate paper` types each candidate's JSON values as `--set` does and passes them on."""
        import model.evaluation

        seen: dict[str, Any] = {}

        def fake_paper(config: object, candidates: dict[str, Any], **kw: object) -> dict[str, Any]:
            seen["config"], seen["candidates"] = config, candidates
            table = {"table": {"cnn_lstm": {"accuracy": 99.0, "macro_f1": 90.0}}}
            return {"chosen": {"cnn_lstm": "wide"}, "random": table, "cv": table}

        monkeypatch.setattr(model.evaluation, "paper_protocol", fake_paper)
        path = tmp_path / "c.json"
        path.write_text(json.dumps({"wide": {"conv-channels": 64, "lead_dropout": 0, "horizons": [1, 2]}}))
        args = ["evaluate", "paper", "--candidates", str(path), "--json", str(tmp_path / "p.json")]
        result = CliRunner().invoke(cli, [*args, "--set", "lr=0.01"])
        assert result.exit_code == 0, result.output
        assert seen["candidates"] == {"wide": {"conv_channels": 64, "lead_dropout": 0.0, "horizons": (1, 2)}}
        assert seen["config"].lr == 0.01
        assert 'chosen on validation: {"cnn_lstm": "wide"}' in result.output

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            ("{", "not JSON"),
            ("[1]", 'expected {"name": {"setting": value}, ...}'),
            ('{"a": {"colour": 1}}', "candidate 'a': unknown training setting 'colour'"),
            ('{"a": {"fold": 1}}', "'fold' is set by the comparison itself"),
            ('{"a": {"pool_bins": 0}}', "`pool_bins` must be >= 1, got 0"),
        ],
    )
    def test_paper_exceptions(self, text: str, message: str, tmp_path: Path) -> None:
        path = tmp_path / "c.json"
        path.write_text(text)
        out = tmp_path / "runs"
        args = ["evaluate", "paper", "--candidates", str(path), "--json", str(tmp_path / "p.json")]
        result = CliRunner().invoke(cli, [*args, "--out-dir", str(out)])
        assert result.exit_code == 2
        assert message in result.output.replace("\n", " ")
        assert not list(tmp_path.rglob("*.pt"))

    def test_inter_patient_refuses_settings(self, tmp_path: Path) -> None:
        result = CliRunner().invoke(
            cli, ["evaluate", "model", "--json", str(tmp_path / "t.json"), "--set", "lead-dropout=0"]
        )
        assert result.exit_code == 2
        assert "training settings apply to --protocol random or cv" in result.output

    @pytest.mark.parametrize(
        ("extra", "message"),
        [
            (["--noise", "ma"], "--noise and --snr go together"),
            (["--snr", "6"], "--noise and --snr go together"),
            (
                ["--noise", "ma", "--snr", "6", "--protocol", "random"],
                "noise applies to --protocol inter-patient",
            ),
            (["--noise", "hum", "--snr", "6"], "'hum' is not one of 'ma', 'bw', 'em'"),
        ],
    )
    def test_noise_exceptions(self, extra: list[str], message: str, tmp_path: Path) -> None:
        result = CliRunner().invoke(cli, ["evaluate", "model", "--json", str(tmp_path / "t.json"), *extra])
        assert result.exit_code == 2
        assert message in result.output.replace("\n", " ")
        assert not (tmp_path / "t.json").exists()
