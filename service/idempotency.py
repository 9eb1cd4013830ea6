"""`Idempotency-Key` on POST: the same key and body replay the first response; another body is a 409."""

import hashlib
import json
import re
import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header
from fastapi.responses import JSONResponse
from pydantic import AfterValidator
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.errors import RequestError
from core.models import IdempotencyRecord
from service.deps import TenantDep

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


@dataclass(frozen=True)
class KeyedPost:
    """A tenant's POST to `route` with its `Idempotency-Key` (None: it sent none)."""

    tenant_id: str
    key: str | None
    route: str

    def answered(self, session: Session) -> bool:
        """Whether the key already has a response to replay."""
        return self._record(session) is not None

    def replay(self, session: Session, request_hash: str) -> JSONResponse | None:
        """The stored response for this key, or None if the key is new (or absent); a 409 if the key
        was used with another request."""
        record = self._record(session)
        if record is None:
            return None
        if record.request_hash != request_hash:
            message = (
                f"Idempotency-Key {self.key!r} was already used with a different request body: use a new key."
            )
            raise RequestError(409, "idempotency_key_reused", message, param="Idempotency-Key")
        return JSONResponse(
            record.response, status_code=record.status_code, headers={"Idempotent-Replayed": "true"}
        )

    def commit_remembered(self, session: Session, request_hash: str, body: dict) -> JSONResponse | None:
        """Remember the response (a 201 of `body`) and commit the caller's transaction: None when it is
        committed, or the response of a concurrent request with the same key that committed first (this
        one is rolled back)."""
        self._remember(session, request_hash, body)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            return self.replay(session, request_hash)
        return None

    def _record(self, session: Session) -> IdempotencyRecord | None:
        if self.key is None:
            return None
        live = IdempotencyRecord.expires_at > int(time.time())
        return session.scalar(select(IdempotencyRecord).where(*self._same_key(), live))

    def _remember(self, session: Session, request_hash: str, body: dict) -> None:
        """Store the response in the caller's transaction; a concurrent twin makes it raise IntegrityError."""
        if self.key is None:
            return
        now = int(time.time())
        session.execute(
            delete(IdempotencyRecord).where(*self._same_key(), IdempotencyRecord.expires_at <= now)
        )
        session.add(
            IdempotencyRecord(
                tenant_id=self.tenant_id,
                key=self.key,
                route=self.route,
                request_hash=request_hash,
                status_code=201,
                response=body,
                expires_at=now + KEY_TTL_SECONDS,
            )
        )

    def _same_key(self) -> tuple:
        return (
            IdempotencyRecord.tenant_id == self.tenant_id,
            IdempotencyRecord.key == self.key,
            IdempotencyRecord.route == self.route,
        )


def keyed_post(route: str) -> object:
    """The dependency type of a POST `route` that takes an `Idempotency-Key`: its `KeyedPost`."""

    async def get_keyed_post(tenant_id: TenantDep, idempotency_key: IdempotencyKey = None) -> KeyedPost:
        return KeyedPost(tenant_id, idempotency_key, route)

    return Annotated[KeyedPost, Depends(get_keyed_post)]
