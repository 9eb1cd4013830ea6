"""`distill keys create|revoke|list`, in-process against a temporary database; the keys they make are the
ones an app with auth on accepts."""

import pytest
from sqlalchemy import select

from cli.main import main
from core.config import Settings
from core.models import ApiKey
from service.main import create_app
from tests.service.helpers import assert_error
from tests.service.tenants import client_for, database, make_settings


@pytest.fixture
def settings(tmp_path) -> Settings:
    return make_settings(tmp_path, auth="on")


def distill(capsys, settings: Settings, *argv: str) -> tuple[str, str]:
    main(list(argv), settings=settings)
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_create_prints_the_key_once_and_stores_only_its_hash(capsys, settings):
    out, err = distill(capsys, settings, "keys", "create", "--tenant", "acme")
    key = out.strip()
    assert out == key + "\n" and key.startswith("dk_key-")  # the key alone on stdout: KEY=$(distill …)
    key_id = key.split("_")[1]
    assert key_id in err and "acme" in err and "once" in err

    with database(settings) as session:
        (row,) = session.scalars(select(ApiKey)).all()
        assert (row.id, row.tenant_id, row.revoked_at) == (key_id, "acme", None)
        stored = " ".join(str(value) for value in vars(row).values())
        assert key.split("_", 2)[2] not in stored

    with client_for(create_app(settings), key) as client:
        assert client.get("/v1/files").status_code == 200


def test_list_shows_ids_and_tenants_never_keys(capsys, settings):
    first = distill(capsys, settings, "keys", "create", "--tenant", "acme")[0].strip()
    second = distill(capsys, settings, "keys", "create", "--tenant", "globex")[0].strip()
    out, _ = distill(capsys, settings, "keys", "list")
    for key, tenant in ((first, "acme"), (second, "globex")):
        assert key.split("_")[1] in out and tenant in out and key not in out
    only, _ = distill(capsys, settings, "keys", "list", "--tenant", "globex")
    assert second.split("_")[1] in only and first.split("_")[1] not in only


@pytest.mark.parametrize("by", ["id", "whole key"])
def test_revoke_makes_the_key_401(capsys, settings, by):
    key = distill(capsys, settings, "keys", "create", "--tenant", "acme")[0].strip()
    key_id = key.split("_")[1]
    app = create_app(settings)
    with client_for(app, key) as client:
        assert client.get("/v1/jobs").status_code == 200
        out, _ = distill(capsys, settings, "keys", "revoke", key_id if by == "id" else key)
        assert key_id in out and "revoked" in out
        assert_error(client.get("/v1/jobs"), 401, None, "unauthorized")
    again, _ = distill(capsys, settings, "keys", "revoke", key_id)
    assert "already revoked" in again


def test_revoking_an_unknown_key_fails(capsys, settings):
    with pytest.raises(SystemExit) as exit_:
        main(["keys", "revoke", "key-0123456789abcdef01234567"], settings=settings)
    assert "no API key" in str(exit_.value.code)


@pytest.mark.parametrize("tenant", ["", "../etc", "a/b", "has space", "x" * 65, "-leading"])
def test_tenant_names_are_plain(capsys, settings, tenant):
    with pytest.raises(SystemExit) as exit_:
        main(["keys", "create", f"--tenant={tenant}"], settings=settings)
    assert "invalid tenant name" in str(exit_.value.code)
    with database(settings) as session:
        assert session.scalars(select(ApiKey)).all() == []


def test_an_unmigrated_database_says_to_migrate(tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["keys", "create", "--tenant", "acme"], settings=Settings(home=tmp_path / "new"))
    assert "distill migrate" in str(exit_.value.code)
