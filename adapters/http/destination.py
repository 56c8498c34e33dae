"""The ``http``/``https`` destination of a channel, over httpx.

Options (the destination's ``options:`` block): ``method`` (POST or PUT, default POST), ``headers``
(mapping), ``timeout`` (seconds, default 30), ``verify`` (true/false or a CA bundle path),
``bearer_token`` (sent as ``Authorization: Bearer``). 2xx is success; 408, 425, 429 and 5xx are retried;
any other status is a definitive rejection (dead letter with the answer kept).
"""

from __future__ import annotations

from typing import Any

import httpx

from engine.errors import ConfigurationError
from engine.messaging.ports import SendResult

__all__ = ["HttpDestination", "create_http_destination"]

_RETRYABLE = {408, 425, 429}


class HttpDestination:
    def __init__(
        self,
        url: str,
        *,
        method: str = "POST",
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
        verify: bool | str = True,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url = url
        self.method = method
        self.headers = headers or {}
        self._client = httpx.AsyncClient(timeout=timeout, verify=verify, transport=transport)

    async def send(self, payload: bytes, *, content_type: str) -> SendResult:
        try:
            response = await self._client.request(
                self.method, self.url, content=payload, headers={"Content-Type": content_type, **self.headers}
            )
        except httpx.HTTPError as exc:
            return SendResult(False, f"{exc.__class__.__name__}: {exc}", retryable=True)
        body = response.text[:2000]
        status_line = f"HTTP {response.status_code} {response.reason_phrase}"
        answer = f"{status_line}\n{body}" if body else status_line
        if response.is_success:
            return SendResult(True, answer)
        retryable = response.status_code >= 500 or response.status_code in _RETRYABLE
        return SendResult(False, answer, retryable=retryable)

    async def close(self) -> None:
        await self._client.aclose()


def create_http_destination(url: str, options: dict[str, Any]) -> HttpDestination:
    method = str(options.get("method", "POST")).upper()
    if method not in ("POST", "PUT"):
        raise ConfigurationError(f"{url}: method must be POST or PUT")
    headers = options.get("headers") or {}
    if not isinstance(headers, dict):
        raise ConfigurationError(f"{url}: headers must be a mapping")
    headers = {str(k): str(v) for k, v in headers.items()}
    token = options.get("bearer_token")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    verify = options.get("verify", True)
    if not isinstance(verify, bool | str):
        raise ConfigurationError(f"{url}: verify must be true, false or a CA bundle path")
    try:
        timeout = float(options.get("timeout", 30))
    except (TypeError, ValueError):
        raise ConfigurationError(f"{url}: timeout must be a number of seconds") from None
    return HttpDestination(url, method=method, headers=headers, timeout=timeout, verify=verify)
