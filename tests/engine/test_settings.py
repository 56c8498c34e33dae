from pathlib import Path

import pytest

from engine.settings import ConduitSettings, is_loopback


def test_defaults_are_embedded_and_loopback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONDUIT_DATABASE_URL", raising=False)
    s = ConduitSettings(data_dir=tmp_path)
    assert s.host == "127.0.0.1"
    assert s.fhir_port == 8080
    assert s.database_url == f"sqlite:///{(tmp_path / 'conduit.db').resolve()}"
    assert s.is_embedded
    assert s.exposure_problem() is None


def test_environment_variables_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CONDUIT_FHIR_PORT", "9999")
    monkeypatch.setenv("CONDUIT_DATABASE_URL", "postgresql+psycopg://u@h/db")
    s = ConduitSettings(data_dir=tmp_path)
    assert s.fhir_port == 9999
    assert not s.is_embedded


def test_yaml_file_is_read_and_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "conduit.yaml"
    cfg.write_text("fhir_port: 8181\nlog_level: DEBUG\n")
    monkeypatch.setenv("CONDUIT_CONFIG", str(cfg))
    monkeypatch.setenv("CONDUIT_LOG_LEVEL", "WARNING")
    s = ConduitSettings(data_dir=tmp_path)
    assert s.fhir_port == 8181
    assert s.log_level == "WARNING"


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("localhost", True), ("0.0.0.0", False)],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_non_loopback_needs_auth_and_tls(tmp_path: Path) -> None:
    s = ConduitSettings(data_dir=tmp_path, host="0.0.0.0")
    problem = s.exposure_problem()
    assert problem and "CONDUIT_AUTH_TOKEN" in problem and "CONDUIT_TLS_CERT" in problem
    s = ConduitSettings(data_dir=tmp_path, host="0.0.0.0", auth_token="t", tls_cert="c.pem", tls_key="k.pem")
    assert s.exposure_problem() is None
    assert ConduitSettings(data_dir=tmp_path, host="0.0.0.0", insecure=True).exposure_problem() is None


def test_yaml_file_may_leave_sections_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A site writes only what it changes: a conduit.yaml without some section must not break any area."""
    from engine.settings import SectionSettings

    class AreaSettings(SectionSettings):
        yaml_section = "area"
        value: int = 7

    cfg = tmp_path / "conduit.yaml"
    cfg.write_text("fhir_port: 8181\nother: {x: 1}\n")
    monkeypatch.setenv("CONDUIT_CONFIG", str(cfg))
    assert AreaSettings().value == 7
    cfg.write_text("area:\n  value: 9\n")
    assert AreaSettings().value == 9


def test_broken_yaml_names_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from engine.errors import ConfigurationError

    cfg = tmp_path / "conduit.yaml"
    cfg.write_text("fhir_port: [8181\n")
    monkeypatch.setenv("CONDUIT_CONFIG", str(cfg))
    with pytest.raises(ConfigurationError, match="conduit.yaml: not valid YAML"):
        ConduitSettings(data_dir=tmp_path)
