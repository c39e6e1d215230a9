"""schemathesis against the live app on the test driver (fast tier), from the OpenAPI document
the app serves: no answer is a 5xx, every answer matches the document (status, content type,
body), and afterwards nothing is half-created."""
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.generation import GenerationMode
from schemathesis.checks import (content_type_conformance, not_a_server_error,
                                 response_schema_conformance, status_code_conformance)

from sqlalchemy import select

from helpers import admin_password, wait_until

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
# They connect to the host their body names: when nothing answers there, 503 HOST_UNREACHABLE
# (as documented) is the right answer, and the only 5xx they may give.
REACHING = {("POST", "/hosts"), ("POST", "/hosts/probe")}


def test_the_api_keeps_its_contract(app, live_server, libvirt_conn):
    base = live_server(app)
    token = app.test_client().post("/api/v1/auth/tokens", json={
        "username": "admin", "password": admin_password(app), "name": "fuzz"}).json["token"]
    schema = schemathesis.openapi.from_url(f"{base}/api/v1/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 41  # every documented operation

    def fuzz(operation, **path):
        strategy = st.one_of(operation.as_strategy(GenerationMode.POSITIVE, path_parameters=path or None),
                             operation.as_strategy(GenerationMode.NEGATIVE, path_parameters=path or None),
                             *operation.get_strategies_from_examples())

        @given(case=strategy)
        @settings(max_examples=40, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def call(case):
            reaching = (case.operation.method.upper(), case.operation.path) in REACHING
            checks = [c for c in CHECKS if not (reaching and c is not_a_server_error)]
            response = case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, checks=checks)
            if reaching and response.status_code >= 500:  # nothing answers at the URI fuzzed
                assert response.json()["error"]["code"] == "HOST_UNREACHABLE", response.text

        call()

    for operation in operations:
        fuzz(operation)
    # Then the operations on one VM, on a VM that exists: actions, console, delete, in any order.
    # (The fuzzing may have set the admin's own quotas, to 0 even, and used them: they are lifted.)
    from limen.extensions import db
    from limen.models import User

    with app.app_context():
        db.session.execute(db.update(User).where(User.username == "admin").values(
            quota_vms=1000, quota_vcpus=1000, quota_memory_mib=10**6, quota_disk_gib=10**4))
        db.session.commit()
    answer = app.test_client().post("/api/v1/vms", headers={"Authorization": f"Bearer {token}"}, json={
        "name": "fuzzed", "vcpus": 1, "memory_mib": 64, "disk_gib": 1})
    assert answer.status_code == 202, answer.json
    created = answer.json["vm"]["uuid"]
    for operation in operations:
        if "{uuid}" in operation.path:
            fuzz(operation, uuid=created)

    # Afterwards, once the operations the fuzzing started are over: nothing half-created.
    from limen.models import VM, Operation

    def settled():
        with app.app_context():
            return not db.session.scalars(select(Operation).where(Operation.state.in_(Operation.ACTIVE))).all()

    wait_until(settled, 30, "the fuzzing's operations to finish")
    with app.app_context():
        rows = dict(db.session.execute(select(VM.uuid, VM.state)).all())
        creates = db.session.scalars(select(Operation.state).where(Operation.kind == "create")).all()
    domains = {d.UUIDString() for d in libvirt_conn.listAllDomains()}
    volumes = set(libvirt_conn.storagePoolLookupByName(app.config["STORAGE_POOL"]).listVolumes())
    # (The fuzzing may have deleted every VM it made since: their create Operations stay.)
    assert "done" in creates, "no create finished: the create path went untested"
    for uuid, state in rows.items():
        assert state not in ("creating", "deleting"), (uuid, state)
        if state == "error":
            assert uuid not in domains and f"{uuid}.qcow2" not in volumes, uuid
        else:
            assert uuid in domains and f"{uuid}.qcow2" in volumes, (uuid, state)
    assert domains <= set(rows), "a domain with no row"
    assert {v.removesuffix(".qcow2") for v in volumes} <= set(rows), "a volume with no row"
    from limen.models import Medium

    with app.app_context():  # no upload reaches libvirt's test driver, and none may leave a row
        assert db.session.scalars(select(Medium)).all() == []
