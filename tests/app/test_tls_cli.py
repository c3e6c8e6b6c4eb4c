"""`serve --certfile --keyfile` and `replay --ca-file`: TLS from the command line.

`serve` runs in a real subprocess with a self-signed certificate: the
dashboard answers https, the ingest server wss://, and `replay` streams to
it only when it trusts the certificate. Bad TLS settings stop either
command before it starts anything, with a message that names the file.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from app import cli
from ingest.tls import client_ssl_context


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_health(url: str, context: ssl.SSLContext, server: subprocess.Popen[bytes]) -> None:
    """Poll ``/health`` over https until the server answers."""
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1, context=context) as response:
                assert json.loads(response.read())["status"] == "ok"
            return
        except OSError:
            assert server.poll() is None, "server exited early"
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)


class TestServeTlsCli:
    def test_basic(self, data_dir: Path, tmp_path: Path, tls_files: Any) -> None:
        ingest_port, web_port = free_port(), free_port()
        instance = tmp_path / "instance"
        cmd = [
            sys.executable,
            "-m",
            "app",
            "serve",
            "--ingest-port",
            str(ingest_port),
            "--port",
            str(web_port),
        ]
        cmd += ["--instance-dir", str(instance), "--certfile", str(tls_files.certfile)]
        cmd += ["--keyfile", str(tls_files.keyfile)]
        server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        trust = client_ssl_context(tls_files.certfile)
        try:
            wait_for_health(f"https://127.0.0.1:{ingest_port}/health", trust, server)
            with urllib.request.urlopen(
                f"https://localhost:{web_port}/login", timeout=5, context=trust
            ) as page:
                assert page.status == 200
            args = [
                "replay",
                "--records",
                "100",
                "--speed",
                "0",
                "--seconds",
                "5",
                "--data-dir",
                str(data_dir),
            ]
            args += ["--server", f"wss://127.0.0.1:{ingest_port}", "--instance-dir", str(instance)]
            untrusted = CliRunner().invoke(cli, args)
            trusted = CliRunner().invoke(cli, [*args, "--ca-file", str(tls_files.certfile)])
        finally:
            server.send_signal(signal.SIGTERM)
            output, _ = server.communicate(timeout=30)
        assert server.returncode == 0, output.decode()
        assert f"dashboard on https://127.0.0.1:{web_port} ; ingest on wss://" in output.decode()
        assert untrusted.exit_code == 1, untrusted.output
        assert "is not trusted" in untrusted.output
        assert trusted.exit_code == 0, trusted.output
        assert "100: 1800 samples" in trusted.output
        assert "all acknowledged" in trusted.output

    def test_exceptions(self, tmp_path: Path, tls_files: Any, make_cert: Any) -> None:
        """A missing or mismatched certificate or key: exit 2 naming the file, nothing started."""
        instance = tmp_path / "instance"
        missing = tmp_path / "missing.crt"
        other = make_cert("other")
        base = ["serve", "--port", "0", "--ingest-port", "0", "--instance-dir", str(instance)]
        cases: list[tuple[list[str], dict[str, str], str]] = [
            (
                ["--certfile", str(missing), "--keyfile", str(tls_files.keyfile)],
                {},
                f"{missing} does not exist",
            ),
            ([], {"CARDIAC_CERTFILE": str(missing), "CARDIAC_KEYFILE": str(tls_files.keyfile)}, str(missing)),
            (["--certfile", str(tls_files.certfile), "--keyfile", str(other.keyfile)], {}, "does not match"),
            (["--keyfile", str(tls_files.keyfile)], {}, "give the certificate with --certfile"),
        ]
        for extra, env, message in cases:
            result = CliRunner().invoke(cli, [*base, *extra], env=env)
            assert result.exit_code == 2, result.output
            assert message in " ".join(result.output.split()), result.output
        assert not instance.exists()


class TestReplayTlsCli:
    def test_exceptions(self, tmp_path: Path) -> None:
        instance = tmp_path / "instance"
        base = ["replay", "--records", "100", "--instance-dir", str(instance)]
        missing = tmp_path / "ca.pem"
        plain = CliRunner().invoke(cli, [*base, "--server", "ws://127.0.0.1:9", "--ca-file", str(missing)])
        assert plain.exit_code == 2
        assert "it is for a wss:// --server" in plain.output
        result = CliRunner().invoke(cli, [*base, "--server", "wss://127.0.0.1:9", "--ca-file", str(missing)])
        assert result.exit_code == 2
        assert f"{missing} does not exist" in " ".join(result.output.split())
        assert not instance.exists()  # refused before any device token was rotated
