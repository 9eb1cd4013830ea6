"""Dependencies shared by the routes: the app's resources, its database, storage and job queue, and the
caller's tenant.

Routes open their database session themselves (`with database.sessions() as session:`) and close it
before they return: a session's connection must go back to the pool before FastAPI serializes the
answer, which waits for a thread of the same thread pool. A yield-dependency session, closed only after
that, deadlocks under load: every thread waits for a connection held by a request that waits for a
thread (fastapi/fastapi#3205).

The dependencies here only read what the app already holds, so they are `async def`: FastAPI calls
those in the event loop, where a plain `def` dependency costs a hop to a worker thread and back per
request (four such hops took 0.6 ms a request, more than the status read itself).

Everything comes from the `Resources` that `create_app` built from its settings (and the job bodies it
keeps, `service.kept_bodies`), so an app made with `create_app(settings)` serves exactly those settings
(the tests make apps with auth on, limits and another database and storage this way).
"""

from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPBearer

from core.config import Settings
from core.db import Database
from core.models import DEFAULT_TENANT
from core.queue import JobQueue
from core.resources import Resources
from core.storage import Storage
from service.kept_bodies import KeptBodies


async def get_resources(request: Request) -> Resources:
    return request.app.state.resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


async def get_settings(resources: ResourcesDep) -> Settings:
    return resources.settings


async def get_database(resources: ResourcesDep) -> Database:
    return resources.database


async def get_storage(resources: ResourcesDep) -> Storage:
    return resources.storage


async def get_queue(resources: ResourcesDep) -> JobQueue:
    return resources.queue


async def get_kept_bodies(request: Request) -> KeptBodies:
    return request.app.state.kept_bodies


SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
StorageDep = Annotated[Storage, Depends(get_storage)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
KeptBodiesDep = Annotated[KeptBodies, Depends(get_kept_bodies)]

# Documents the scheme in the OpenAPI document; `KeyCheck` reads the header itself to say what is wrong.
bearer_scheme = HTTPBearer(
    auto_error=False,
    description="An API key (`distill keys create --tenant NAME`); required when the server runs with "
    "`DISTILL_AUTH=on`.",
)


async def get_tenant(
    request: Request, settings: SettingsDep, _documented: Annotated[object, Security(bearer_scheme)] = None
) -> str:
    """The tenant every resource of this request belongs to: the API key's tenant when auth is on
    (`key_check.KeyCheck` found it before the body was read), else the single-user default tenant."""
    if settings.auth == "off":
        return DEFAULT_TENANT
    return request.state.tenant_id


TenantDep = Annotated[str, Depends(get_tenant)]
