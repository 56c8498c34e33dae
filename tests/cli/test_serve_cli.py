"""`conduit serve` refuses unsafe exposure and `conduit db` manages the schema, as a user runs them."""

import os
import subprocess
import sys
from pathlib import Path


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUIT_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "engine", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=60,
    )


def test_serve_refuses_non_loopback_without_auth(tmp_path: Path) -> None:
    result = run("serve", "--host", "0.0.0.0", env={"CONDUIT_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0" in result.stderr
    assert "CONDUIT_AUTH_TOKEN" in result.stderr


def test_serve_rejects_unknown_listener(tmp_path: Path) -> None:
    result = run("serve", "--only", "smtp", env={"CONDUIT_DATA_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert "unknown listener" in result.stderr


def test_db_upgrade_then_status(tmp_path: Path, database_url: str) -> None:
    env = {"CONDUIT_DATA_DIR": str(tmp_path), "CONDUIT_DATABASE_URL": database_url}
    up = run("db", "upgrade", env=env)
    assert up.returncode == 0, up.stderr
    assert "database is current" in up.stdout
    status = run("db", "status", env=env)
    assert status.returncode == 0, status.stdout + status.stderr


def test_db_upgrade_on_embedded_default_creates_data_dir(tmp_path: Path) -> None:
    result = run("db", "upgrade", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "conduit-data" / "conduit.db").exists()


def test_help_teaches(tmp_path: Path) -> None:
    result = run("serve", "--help")
    assert result.returncode == 0
    assert "--only" in result.stdout and "127.0.0.1:8080/fhir" in result.stdout


def test_serve_mllp_processes_option(tmp_path: Path) -> None:
    help_text = run("serve", "--help").stdout
    assert "--mllp-processes" in help_text and "--mllp-child" not in help_text  # the child's is internal
    zero = run("serve", "--only", "mllp", "--mllp-processes", "0", env={"CONDUIT_DATA_DIR": str(tmp_path)})
    assert zero.returncode == 2 and "mllp-processes" in zero.stderr
    bad = run(
        "serve", "--only", "mllp", env={"CONDUIT_DATA_DIR": str(tmp_path), "CONDUIT_MLLP_PROCESSES": "0"}
    )
    assert bad.returncode == 2 and "mllp_processes" in bad.stderr
