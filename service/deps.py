"""Dependencies shared by the routes: settings, database session, storage and the caller's tenant.

Everything here follows the settings dependency, so an app made with `create_app(settings)` serves
those settings (the tests make apps with auth on, limits and another database this way).
"""

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer
from sqlalchemy.orm import Session

from service.config import Settings, get_settings
from service.db import sessionmaker_for
from service.models import DEFAULT_TENANT
from service.storage import Storage, storage_at

SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with sessionmaker_for(settings.resolved_database_url)() as session:
        yield session


def get_request_storage(settings: SettingsDep) -> Storage:
    return storage_at(str(settings.storage_root))


SessionDep = Annotated[Session, Depends(get_session)]
StorageDep = Annotated[Storage, Depends(get_request_storage)]

# Documents the scheme in the OpenAPI document; `KeyCheck` reads the header itself to say what is wrong.
bearer_scheme = HTTPBearer(
    auto_error=False,
    description="An API key (`distill keys create --tenant NAME`); required when the server runs with "
    "`DISTILL_AUTH=on`.",
)


def get_tenant(
    request: Request, settings: SettingsDep, _documented: Annotated[object, Security(bearer_scheme)] = None
) -> str:
    """The tenant every resource of this request belongs to: the API key's tenant when auth is on
    (`key_check.KeyCheck` found it before the body was read), else the single-user default tenant."""
    if settings.auth == "off":
        return DEFAULT_TENANT
    return request.state.tenant_id


TenantDep = Annotated[str, Depends(get_tenant)]
