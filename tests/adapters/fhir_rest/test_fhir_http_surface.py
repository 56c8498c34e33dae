"""The HTTP surface around FHIR: /health, /ready, /metrics, bearer-token auth, TLS, extra routers."""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhir_rest_server import ThreadedListener, nodelay_transport
from sqlalchemy import text

from adapters.fhir_rest import app as app_module
from tests.support import self_signed_certificate


def test_health_ready_metrics(server: ThreadedListener, fhir: httpx.Client) -> None:
    health = httpx.get(server.base + "/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    ready = httpx.get(server.base + "/ready")
    assert ready.status_code == 200 and ready.json() == {
        "status": "ready",
        "database": True,
        "migrations": True,
    }
    fhir.get("/metadata")
    metrics = httpx.get(server.base + "/metrics")
    assert metrics.status_code == 200
    assert 'conduit_fhir_requests_total{interaction="capabilities",status="200"}' in metrics.text


def test_ready_is_503_when_migrations_are_not_current(runtime: Any) -> None:
    with runtime.db.engine.begin() as conn:
        heads = [row[0] for row in conn.execute(text("SELECT version_num FROM alembic_version"))]
        conn.execute(text("DELETE FROM alembic_version"))
    try:
        with ThreadedListener(runtime) as running:
            r = httpx.get(running.base + "/ready")
            assert r.status_code == 503 and r.json()["migrations"] is False
            assert httpx.get(running.base + "/health").status_code == 200
    finally:  # the PostgreSQL test database is shared by the session: put the heads back
        with runtime.db.engine.begin() as conn:
            for head in heads:
                conn.execute(text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": head})


def test_bearer_token(runtime: Any) -> None:
    runtime.settings.auth_token = "s3cret-token"
    with ThreadedListener(runtime) as running:
        base = running.base
        denied = httpx.get(base + "/fhir/Patient")
        assert denied.status_code == 401
        assert denied.json()["issue"][0]["code"] == "login"
        assert denied.headers["www-authenticate"].startswith("Bearer")
        assert httpx.get(base + "/fhir/Patient", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(base + "/metrics").status_code == 401
        ok = httpx.get(base + "/fhir/Patient", headers={"Authorization": "Bearer s3cret-token"})
        assert ok.status_code == 200
        assert httpx.get(base + "/health").status_code == 200
        assert httpx.get(base + "/fhir/metadata").status_code == 200
        # the read fast path sits behind the same check
        assert httpx.get(base + "/fhir/Patient/any-id").status_code == 401
        assert httpx.head(base + "/fhir/Patient/any-id").status_code == 401
        read = httpx.get(base + "/fhir/Patient/any-id", headers={"Authorization": "Bearer s3cret-token"})
        assert read.status_code == 404


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_tls(runtime: Any, tmp_path: Path) -> None:
    cert, key = self_signed_certificate(tmp_path)
    runtime.settings.tls_cert, runtime.settings.tls_key = cert, key
    with ThreadedListener(runtime) as running:
        assert running.listener.describe().startswith("FHIR R4  https://")
        context = ssl.create_default_context(cafile=str(cert))
        port = running.listener.port
        r = httpx.get(f"https://127.0.0.1:{port}/fhir/metadata", verify=context)
        assert r.status_code == 200 and r.json()["fhirVersion"] == "4.0.1"


def test_extra_routers_are_mounted_when_importable(runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(app_module.EXTRA_ROUTERS, "/probe", "fhir_rest_probe_router:build_router")
    monkeypatch.setitem(app_module.EXTRA_ROUTERS, "/absent", "no_such_module_anywhere:build_router")
    with ThreadedListener(runtime) as running:
        r = httpx.get(running.base + "/probe/ping")
        assert r.status_code == 200 and r.json() == {"runtime": True}
        assert httpx.get(running.base + "/absent/ping").status_code == 404


def test_admin_router_is_mounted(server: ThreadedListener) -> None:
    pytest.importorskip("adapters.admin_http.router")
    with httpx.Client(transport=nodelay_transport()) as client:
        r = client.get(server.base + "/admin/channels")
    assert r.status_code != 404
