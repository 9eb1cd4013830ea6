"""An app made with its own settings serves their database, storage and queue, and never touches the
environment's: what the settings name is built once, by `create_app`, and handed down."""

from sqlalchemy import func, select

from core.checkpoint_store import StoredCheckpoint
from core.models import Job
from core.resources import Resources, make_storage
from service.main import create_app
from tests.service.helpers import dataset_bytes, job_request, safetensors_teacher, stored_objects, upload_ok
from tests.service.tenants import client_for, make_settings


def queued_files(broker_folder) -> list:
    return sorted(path.name for path in (broker_folder / "queue").glob("*")) if broker_folder.exists() else []


def test_an_app_with_its_own_settings_never_touches_the_environments(tmp_path, resources):
    environment = resources.settings
    settings = make_settings(tmp_path / "app")
    own = Resources.from_settings(settings)
    before = stored_objects(environment.storage_root), queued_files(environment.broker_folder)
    with client_for(create_app(settings)) as client:
        teacher = upload_ok(client, safetensors_teacher(), "teacher", "teacher.safetensors")
        dataset = upload_ok(client, dataset_bytes(), "dataset", "train.npz")
        job = client.post("/v1/jobs", json=job_request(teacher["id"], dataset["id"])).json()
        assert job["status"] == "queued"
        assert len(queued_files(settings.broker_folder)) == 1  # sent on the app's own broker

        # A checkpoint as a lost worker leaves it, in the app's storage and (a decoy) the environment's.
        saved = tmp_path / "saved.pt"
        saved.write_bytes(b"training state")
        decoy = StoredCheckpoint(make_storage(str(environment.storage_root)), "default", job["id"])
        for checkpoint in (StoredCheckpoint(own.storage, "default", job["id"]), decoy):
            checkpoint.save(saved)

        assert client.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"
        assert not StoredCheckpoint(own.storage, "default", job["id"]).fetch(tmp_path / "fetched.pt")

    assert decoy.fetch(tmp_path / "decoy.pt")  # the environment's storage was not touched
    decoy.delete()
    assert (stored_objects(environment.storage_root), queued_files(environment.broker_folder)) == before
    with resources.database.transaction() as session:
        assert session.scalar(select(func.count()).where(Job.id == job["id"]).select_from(Job)) == 0
    with own.database.transaction() as session:
        assert session.scalar(select(Job.status).where(Job.id == job["id"])) == "cancelled"
