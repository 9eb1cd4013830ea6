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

from fastapi import Depends, Request

from core.config import Settings
from core.db import Database
from core.models import DEFAULT_TENANT
from core.queue import JobQueue
from core.resources import Resources
from core.storage import Storage
from service.kept_bodies import KeptBodies


def resources_of(request: Request) -> Resources:
    return request.app.state.resources


# Each reads the app's state itself rather than through a dependency on `Resources`: FastAPI solves every
# dependency of a route at each request, and a read route's nested ones cost more than its query.
async def get_resources(request: Request) -> Resources:
    return resources_of(request)


async def get_settings(request: Request) -> Settings:
    return resources_of(request).settings


async def get_database(request: Request) -> Database:
    return resources_of(request).database


async def get_storage(request: Request) -> Storage:
    return resources_of(request).storage


async def get_queue(request: Request) -> JobQueue:
    return resources_of(request).queue


async def get_kept_bodies(request: Request) -> KeptBodies:
    return request.app.state.kept_bodies


ResourcesDep = Annotated[Resources, Depends(get_resources)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
DatabaseDep = Annotated[Database, Depends(get_database)]
StorageDep = Annotated[Storage, Depends(get_storage)]
QueueDep = Annotated[JobQueue, Depends(get_queue)]
KeptBodiesDep = Annotated[KeptBodies, Depends(get_kept_bodies)]


async def get_tenant(request: Request) -> str:
    """The tenant every resource of this request belongs to: the API key's tenant when auth is on
    (`key_check.KeyCheck` found it before the body was read; `service.openapi` documents the scheme), else
    the single-user default tenant."""
    if resources_of(request).settings.auth == "off":
        return DEFAULT_TENANT
    return request.state.tenant_id


TenantDep = Annotated[str, Depends(get_tenant)]
