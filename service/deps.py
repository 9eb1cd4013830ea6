"""Dependencies shared by the routes: database session, storage, settings and the caller's tenant."""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends
from sqlalchemy.orm import Session

from service.config import Settings, get_settings
from service.db import get_sessionmaker
from service.errors import APIError
from service.models import DEFAULT_TENANT
from service.storage import Storage, get_storage


def get_session() -> Iterator[Session]:
    with get_sessionmaker()() as session:
        yield session


def get_tenant(settings: Annotated[Settings, Depends(get_settings)]) -> str:
    """The tenant every resource of this request belongs to. Auth is one dependency: API keys plug in here."""
    if settings.auth == "on":
        raise APIError(401, "unauthorized", "DISTILL_AUTH=on but this server has no API keys configured yet.")
    return DEFAULT_TENANT


SessionDep = Annotated[Session, Depends(get_session)]
StorageDep = Annotated[Storage, Depends(get_storage)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
TenantDep = Annotated[str, Depends(get_tenant)]
