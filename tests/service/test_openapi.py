"""The OpenAPI document agrees with the spec: every path, and the job request's documented fields."""

import pytest

SPEC_OPERATIONS = {
    "/healthz": {"get"},
    "/readyz": {"get"},
    "/v1/files": {"get", "post"},
    "/v1/files/{file_id}": {"get", "delete"},
    "/v1/files/{file_id}/content": {"get"},
    "/v1/jobs": {"get", "post"},
    "/v1/jobs/{job_id}": {"get"},
    "/v1/jobs/{job_id}/cancel": {"post"},
    "/v1/jobs/{job_id}/events": {"get"},
    "/v1/jobs/{job_id}/metrics": {"get"},
    "/v1/jobs/{job_id}/artifacts": {"get"},
    "/v1/jobs/{job_id}/artifacts/{name}": {"get"},
}


@pytest.fixture(scope="module")
def openapi(client) -> dict:
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.json()


def resolve(document: dict, schema: dict) -> dict:
    """Follow `$ref` (and a single-entry `allOf`/`anyOf` with null) to the schema object."""
    while True:
        if "$ref" in schema:
            schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[-1]]
        elif "anyOf" in schema:
            options = [s for s in schema["anyOf"] if s.get("type") != "null"]
            if len(options) != 1:
                return schema
            schema = options[0]
        elif "allOf" in schema and len(schema["allOf"]) == 1:
            schema = schema["allOf"][0]
        else:
            return schema


def test_every_spec_path_is_documented(openapi):
    paths = openapi["paths"]
    for path, methods in SPEC_OPERATIONS.items():
        assert path in paths, path
        assert methods <= set(paths[path]), (path, set(paths[path]))


def test_job_create_documents_the_request(openapi):
    operation = openapi["paths"]["/v1/jobs"]["post"]
    body = resolve(openapi, operation["requestBody"]["content"]["application/json"]["schema"])
    assert {"teacher", "teachers", "student", "dataset", "distillation", "training", "name"} <= set(
        body["properties"]
    )
    assert set(body["required"]) == {"student", "dataset"}  # and one of `teacher` / `teachers`

    distillation = resolve(openapi, body["properties"]["distillation"])["properties"]
    temperature, alpha = distillation["temperature"], distillation["alpha"]
    assert {"type": "number", "minimum": 0.01, "maximum": 1000.0} in temperature["anyOf"]  # x / T finite
    assert {"const": "auto", "type": "string"} in temperature["anyOf"] and temperature["default"] == 4.0
    assert {"type": "number", "minimum": 0.0, "maximum": 1000.0} in alpha["anyOf"] and alpha["default"] == 0.9
    assert distillation["beta"]["minimum"] == 0 and distillation["beta"]["default"] == 0.1
    assert all(field.get("description") for field in distillation.values())

    training = resolve(openapi, body["properties"]["training"])["properties"]
    assert training["epochs"]["default"] == 10 and training["epochs"]["minimum"] == 1
    assert training["batch_size"]["default"] == 128
    assert training["learning_rate"]["default"] == 0.001
    assert training["seed"]["default"] == 0

    teacher = openapi["components"]["schemas"]["TeacherRef"]["properties"]
    assert {"file_id", "format", "architecture", "weight"} <= set(teacher)
    formats = resolve(openapi, teacher["format"])
    assert set(formats["enum"]) == {"safetensors", "pt2", "onnx", "hf"}  # the contract's three, and hf
    dataset = resolve(openapi, body["properties"]["dataset"])["properties"]
    assert {"train_file_id", "validation_file_id"} <= set(dataset)


def test_the_soft_losses_and_their_parameters_are_documented(openapi):
    body = openapi["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    distillation = resolve(openapi, resolve(openapi, body)["properties"]["distillation"])["properties"]
    branches = [resolve(openapi, branch) for branch in distillation["soft_loss"]["anyOf"]]
    choices = {choice for branch in branches for choice in branch.get("enum", [branch.get("const")])}
    assert choices == {"kl", "ce", "mse", "dkd", "dist", "auto"}
    search = resolve(openapi, distillation["search"])["properties"]
    assert search["budget_epochs"]["description"] and search["soft_losses"]["default"] == [
        "kl",
        "dkd",
        "dist",
    ]
    dkd, dist = resolve(openapi, distillation["dkd"]), resolve(openapi, distillation["dist"])
    assert dkd["properties"]["non_target_weight"]["default"] == 8.0
    assert dist["properties"]["intra_weight"]["minimum"] == 0.0
    weights = [*dkd["properties"].values(), *dist["properties"].values()]
    assert all(weight.get("description") for weight in weights)
    assert distillation["logit_standardization"]["default"] is False


def test_architecture_is_a_union_of_families(openapi):
    student = resolve(openapi, openapi["components"]["schemas"]["StudentRef"]["properties"]["architecture"])
    assert student["discriminator"]["propertyName"] == "family"
    assert {"mlp", "cnn"} <= set(student["discriminator"]["mapping"])


def test_file_upload_documents_purpose(openapi):
    operation = openapi["paths"]["/v1/files"]["post"]
    form = resolve(openapi, operation["requestBody"]["content"]["multipart/form-data"]["schema"])
    assert {"file", "purpose"} <= set(form["required"])
    assert set(resolve(openapi, form["properties"]["purpose"])["enum"]) == {"teacher", "dataset", "tokenizer"}
    assert "201" in operation["responses"]


def test_job_object_documents_status_values(openapi):
    job = openapi["components"]["schemas"]["JobObject"]["properties"]
    assert set(resolve(openapi, job["status"])["enum"]) == {
        "queued",
        "validating",
        "running",
        "succeeded",
        "failed",
        "cancelling",
        "cancelled",
    }
    assert {"request", "progress", "metrics", "error", "artifacts"} <= set(job)


def test_documented_422_bodies_are_the_error_body(openapi):
    """Every documented 422 is the spec's `{"error": {...}}`, not FastAPI's default `{"detail": [...]}`."""
    for path, operations in openapi["paths"].items():
        for method, operation in operations.items():
            response = operation.get("responses", {}).get("422")
            if response is None:
                continue
            schema = response["content"]["application/json"]["schema"]
            assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path)
