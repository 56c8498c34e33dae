"""A router factory for the extra-router test (mounted by import path like adapters.admin_http.router)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter


def build_router(runtime: Any) -> APIRouter:
    router = APIRouter()

    @router.get("/ping")
    def ping() -> dict[str, bool]:
        return {"runtime": runtime is not None}

    return router
