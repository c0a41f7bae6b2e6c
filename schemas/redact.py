"""Showing a connection URL to a human without its password (logs, errors, status output, doctor)."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr


def redact_url(url: str | SecretStr | None) -> str:
    """Return ``url`` with any password replaced by ``***`` (for logs and status output)."""
    if url is None:
        return ""
    raw = url.get_secret_value() if isinstance(url, SecretStr) else url
    parts = urlsplit(raw)
    if parts.password is None:
        return raw
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
