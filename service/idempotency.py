"""`Idempotency-Key` on POST: the same key and body replay the first response; another body is a 409."""

import hashlib
import json
import re
import time
from typing import Annotated

from fastapi import Header
from fastapi.responses import JSONResponse
from pydantic import AfterValidator
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import RequestError
from core.models import IdempotencyRecord

KEY_TTL_SECONDS = 24 * 3600
KEY = re.compile(r"[\x21-\x7e]{1,255}")


def _checked_key(key: str | None) -> str | None:
    """An empty key would be one key for every request of the tenant: keys are 1 to 255 visible characters."""
    if key is not None and not KEY.fullmatch(key):
        raise ValueError(
            "use 1 to 255 visible ASCII characters (letters, digits, punctuation; no spaces), e.g. a UUID"
        )
    return key


IdempotencyKey = Annotated[
    str | None,
    Header(
        description="1 to 255 visible ASCII characters. A retry with the same key and body gets the "
        "first response (for 24 h); another body with the key is a 409."
    ),
    AfterValidator(_checked_key),
]


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def replay(
    session: Session, tenant_id: str, key: str | None, route: str, request_hash: str
) -> JSONResponse | None:
    """The stored response for this key, or None if the key is new (or absent)."""
    if key is None:
        return None
    record = session.scalar(
        select(IdempotencyRecord).where(
            IdempotencyRecord.tenant_id == tenant_id,
            IdempotencyRecord.key == key,
            IdempotencyRecord.route == route,
            IdempotencyRecord.expires_at > int(time.time()),
        )
    )
    if record is None:
        return None
    if record.request_hash != request_hash:
        raise RequestError(
            409,
            "idempotency_key_reused",
            f"Idempotency-Key {key!r} was already used with a different request body: use a new key.",
            "Idempotency-Key",
        )
    return JSONResponse(
        record.response, status_code=record.status_code, headers={"Idempotent-Replayed": "true"}
    )


def _remember(
    session: Session, tenant_id: str, key: str | None, route: str, request_hash: str, status: int, body: dict
) -> None:
    """Store the response in the caller's transaction; a concurrent twin makes this raise IntegrityError."""
    if key is None:
        return
    now = int(time.time())
    session.execute(
        delete(IdempotencyRecord).where(
            IdempotencyRecord.tenant_id == tenant_id,
            IdempotencyRecord.key == key,
            IdempotencyRecord.route == route,
            IdempotencyRecord.expires_at <= now,
        )
    )
    session.add(
        IdempotencyRecord(
            tenant_id=tenant_id,
            key=key,
            route=route,
            request_hash=request_hash,
            status_code=status,
            response=body,
            expires_at=now + KEY_TTL_SECONDS,
        )
    )


def commit_remembered(
    session: Session, tenant_id: str, key: str | None, route: str, request_hash: str, status: int, body: dict
) -> JSONResponse | None:
    """Remember the response and commit the caller's transaction: None when it is committed, or the
    response of a concurrent request with the same key that committed first (this one is rolled back)."""
    _remember(session, tenant_id, key, route, request_hash, status, body)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return replay(session, tenant_id, key, route, request_hash)
    return None


__all__ = ["commit_remembered", "fingerprint", "replay"]
