"""Identifiers shared by every kind of record: UTC timestamps, run ids and config hashes."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from typing import Any


def utc_now_iso() -> str:
    """Now, UTC, ISO 8601 to the second (``2026-11-30T08:36:09+00:00``)."""
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def run_id(config_hash: str) -> str:
    """``<UTC yyyymmddThhmmss>-<first 10 hex of the config hash>-<6 random hex>``: sortable by
    start time, and unique: runs of one configuration started in the same second (parallel
    jobs, a script) would otherwise name the same record and samples files and overwrite
    each other."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S")
    return f"{stamp}-{config_hash[:10]}-{secrets.token_hex(3)}"


def stable_hash(identity: dict[str, Any]) -> str:
    """16 hex of SHA-256 over the JSON of ``identity`` with sorted keys (``default=str``)."""
    blob = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
