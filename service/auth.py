"""API keys: made by `distill keys create`, checked on every request when `DISTILL_AUTH=on`.

A key reads `dk_<key id>_<secret>`: the id finds the stored row, the secret proves the caller holds the key.
Only the secret's SHA-256 is stored, so a copy of the database does not hand out working keys.
"""

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from core.errors import RequestError
from core.models import ApiKey, new_id, now

KEY_PREFIX = "dk"
KEY_ID = re.compile(r"^key-[0-9a-f]{1,60}$")
TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
LAST_USED_RESOLUTION_SECONDS = 60  # `last_used_at` is written at most this often per key, not per request
HOW_TO_GET_A_KEY = (
    "send `Authorization: Bearer <api key>`; the operator makes keys with `distill keys create`"
)


class Unauthorized(RequestError):
    """401 with `WWW-Authenticate: Bearer`: no key, a malformed one, an unknown one or a revoked one."""

    headers = {"WWW-Authenticate": "Bearer"}

    def __init__(self, message: str):
        super().__init__(401, "unauthorized", message)


@dataclass(frozen=True)
class NewKey:
    id: str
    tenant_id: str
    key: str  # the only time the whole key exists outside its holder's hands


def hash_secret(secret: str) -> str:
    # SHA-256, not a slow password hash (bcrypt, argon2): the secret is 256 random bits from the OS's
    # CSPRNG, not a human's password, so guessing it is hopeless however fast the hash is, and a fast
    # hash keeps checking a key on every request cheap. Slow hashes only help low-entropy secrets.
    return hashlib.sha256(secret.encode()).hexdigest()


def check_tenant_name(name: str) -> str:
    # Tenant names are also path segments in the store (`files/<tenant>/…`): keep them plain.
    if not TENANT_NAME.match(name):
        raise ValueError(
            f"invalid tenant name {name!r}: use 1 to 64 letters, digits, '-' or '_', starting with a letter "
            "or digit"
        )
    return name


def create_key(session: Session, tenant_id: str) -> NewKey:
    """A new key for the tenant, added to the session (the caller commits)."""
    check_tenant_name(tenant_id)
    key_id, secret = new_id("key"), secrets.token_urlsafe(32)
    session.add(ApiKey(id=key_id, tenant_id=tenant_id, secret_sha256=hash_secret(secret)))
    return NewKey(id=key_id, tenant_id=tenant_id, key=f"{KEY_PREFIX}_{key_id}_{secret}")


def parse_key(key: str) -> tuple[str, str] | None:
    """(key id, secret) of a well-formed key, else None."""
    prefix, _, rest = key.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != KEY_PREFIX or not KEY_ID.match(key_id) or not secret:
        return None
    return key_id, secret


def key_id_of(text: str) -> str:
    """A key id, from the id itself or from a whole key (revoking a leaked key by pasting it)."""
    parsed = parse_key(text)
    return parsed[0] if parsed else text


def revoke_key(session: Session, key_id: str) -> tuple[ApiKey | None, bool]:
    """The key (None if there is no such key) and whether this revoked it (False: it already was).
    The caller commits."""
    row = session.scalar(select(ApiKey).where(ApiKey.id == key_id))
    if row is None or row.revoked_at is not None:
        return row, False
    row.revoked_at = now()
    return row, True


def authenticate(session: Session, authorization: str | None) -> ApiKey:
    """The live key an `Authorization` header carries, or Unauthorized saying what is wrong with it."""
    if not authorization or not authorization.strip():
        raise Unauthorized(f"This server requires an API key: {HOW_TO_GET_A_KEY}.")
    scheme, _, credentials = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise Unauthorized(f"The Authorization header must be `Bearer <api key>`: {HOW_TO_GET_A_KEY}.")
    parsed = parse_key(credentials.strip())
    row = session.scalar(select(ApiKey).where(ApiKey.id == parsed[0])) if parsed else None
    # Compare even when there is no row, so an unknown id costs the same as a wrong secret.
    expected = row.secret_sha256 if row is not None else hash_secret(secrets.token_urlsafe(32))
    if parsed is None or not hmac.compare_digest(expected, hash_secret(parsed[1])) or row is None:
        raise Unauthorized("The API key is not valid: check that it was copied whole, or ask for a new one.")
    if row.revoked_at is not None:
        raise Unauthorized(f"The API key {row.id} was revoked: ask the operator for a new one.")
    _note_use(session, row)
    return row


def _note_use(session: Session, row: ApiKey) -> None:
    moment = int(time.time())
    if row.last_used_at is not None and moment - row.last_used_at < LAST_USED_RESOLUTION_SECONDS:
        return
    session.execute(update(ApiKey).where(ApiKey.pk == row.pk).values(last_used_at=moment))
    session.commit()
