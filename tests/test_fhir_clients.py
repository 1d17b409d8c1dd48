"""Standard FHIR client libraries, used unmodified, against the live server.

SMART's `fhirclient` (4.x, R4 models, strict parsing of every response) and `fhirpy` (plain dicts,
follows `Bundle.link[next]`). If Garrison's JSON, status codes or paging drift from what real
clients expect, these tests break.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import requests
from fhirclient.client import FHIRClient
from fhirclient.models.bundle import Bundle, BundleEntry, BundleEntryRequest
from fhirclient.models.capabilitystatement import CapabilityStatement
from fhirclient.models.codeableconcept import CodeableConcept
from fhirclient.models.coding import Coding
from fhirclient.models.fhirdate import FHIRDate
from fhirclient.models.fhirreference import FHIRReference
from fhirclient.models.humanname import HumanName
from fhirclient.models.identifier import Identifier
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRNotFoundException, FHIRServer
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import OperationOutcome, ResourceNotFound

from tests.conftest import LiveServer

MRN = "urn:test:mrn"


# ------------------------------------------------------------------------------ fhirclient (SMART)


@pytest.fixture
def smart(server: LiveServer) -> FHIRClient:
    client = FHIRClient(settings={"app_id": "garrison-tests", "api_base": server.fhir})
    assert client.server is not None
    # A backend token, as a SMART app would hold after authorising.
    client.server.session.headers.update(server.headers)
    return client


def smart_server(smart: FHIRClient) -> FHIRServer:
    server: FHIRServer = smart.server
    return server


def smart_patient(family: str, given: str, mrn: str, birth_date: str, gender: str = "female") -> Patient:
    patient = Patient()
    name = HumanName()
    name.family = family
    name.given = [given]
    patient.name = [name]
    identifier = Identifier()
    identifier.system = MRN
    identifier.value = mrn
    patient.identifier = [identifier]
    patient.birthDate = FHIRDate(birth_date)
    patient.gender = gender
    return patient


def smart_create(patient: Patient, server: FHIRServer) -> Patient:
    """Create, then parse the server's answer with the strict R4 model, as an app would."""
    answer = patient.create(server)
    assert answer is not None
    created = Patient(answer)
    created.origin_server = server
    return created


def smart_search(resource: type[Any], struct: dict[str, Any], server: FHIRServer) -> list[Any]:
    return list(resource.where(struct).perform_resources_iter(server))


def test_fhirclient_reads_the_capability_statement(smart: FHIRClient) -> None:
    # prepare() fetches /metadata and parses it with the strict CapabilityStatement model. The
    # statement declares SMART on FHIR, so the client knows it must authorise before use, and
    # where: Garrison's own authorization server.
    assert smart.prepare() is False
    auth = smart_server(smart).auth
    assert auth is not None and auth.auth_type == "oauth2"
    assert str(auth._authorize_uri).endswith("/oauth/authorize")
    assert str(auth._token_uri).endswith("/oauth/token")
    capability = smart_server(smart).capabilityStatement
    assert isinstance(capability, CapabilityStatement)
    assert capability.fhirVersion == "4.0.1"
    types = {r.type for r in capability.rest[0].resource}
    assert {"Patient", "Observation"} <= types


def test_fhirclient_create_read_update_delete(smart: FHIRClient) -> None:
    server = smart_server(smart)
    created = smart_create(smart_patient("Okafor", "Chidi", "F-1", "1984-07-19", "male"), server)
    assert created.id and created.meta.versionId == "1"
    assert created.birthDate.isostring == "1984-07-19"

    read = Patient.read(created.id, server)
    assert read.as_json() == created.as_json()
    assert read.name[0].family == "Okafor" and read.identifier[0].value == "F-1"
    assert read.meta.lastUpdated is not None and read.meta.lastUpdated.datetime is not None

    read.gender = "other"
    read.name[0].given = ["Chidi", "Emeka"]
    answer = read.update()
    assert answer is not None and answer["meta"]["versionId"] == "2"
    again = Patient.read(created.id, server)
    assert again.gender == "other" and again.name[0].given == ["Chidi", "Emeka"]
    assert again.meta.versionId == "2"

    again.delete()
    with pytest.raises(requests.HTTPError) as gone:
        Patient.read(created.id, server)
    assert gone.value.response is not None and gone.value.response.status_code == 410
    with pytest.raises(FHIRNotFoundException):
        Patient.read("never-existed", server)


def test_fhirclient_search_by_name_identifier_and_birthdate(smart: FHIRClient) -> None:
    server = smart_server(smart)
    ids = {
        mrn: smart_create(smart_patient(family, given, mrn, born), server).id
        for family, given, mrn, born in [
            ("Okafor", "Chidi", "S-1", "1984-07-19"),
            ("Okafor", "Ngozi", "S-2", "1990-02-01"),
            ("Lindqvist", "Astrid", "S-3", "1975-11-30"),
        ]
    }

    def found(struct: dict[str, Any]) -> set[str]:
        return {p.id for p in smart_search(Patient, struct, server)}

    assert found({"family": "Okafor"}) == {ids["S-1"], ids["S-2"]}
    assert found({"name": "astrid"}) == {ids["S-3"]}
    assert found({"given": "Ngo"}) == {ids["S-2"]}  # string search matches a prefix
    assert found({"identifier": f"{MRN}|S-2"}) == {ids["S-2"]}
    assert found({"identifier": "S-3"}) == {ids["S-3"]}
    assert found({"birthdate": "1984-07-19"}) == {ids["S-1"]}
    assert found({"birthdate": "1984"}) == {ids["S-1"]}  # a year is a range
    # fhirclient turns {"$and": [...]} into a repeated parameter; the values carry R4 prefixes.
    assert found({"birthdate": {"$and": ["ge1980-01-01", "lt1990-01-01"]}}) == {ids["S-1"]}
    assert found({"family": "Okafor", "birthdate": "ge1985"}) == {ids["S-2"]}
    assert found({"family": {"$exact": "Okafor"}}) == {ids["S-1"], ids["S-2"]}
    assert found({"family": "Nobody"}) == set()


def smart_observation(subject: str, code: str, value: str) -> Observation:
    observation = Observation()
    observation.status = "final"
    coding = Coding()
    coding.system = "http://loinc.org"
    coding.code = code
    concept = CodeableConcept()
    concept.coding = [coding]
    observation.code = concept
    reference = FHIRReference()
    reference.reference = subject
    observation.subject = reference
    observation.valueString = value
    return observation


def test_fhirclient_includes_and_paging(smart: FHIRClient) -> None:
    server = smart_server(smart)
    patient = smart_create(smart_patient("Moreau", "Lea", "I-1", "2001-03-04"), server)
    for n in range(3):
        answer = smart_observation(f"Patient/{patient.id}", "8867-4", f"reading {n}").create(server)
        assert answer is not None and answer["subject"]["reference"] == f"Patient/{patient.id}"

    # _include=Observation:subject brings the patient along, once.
    search = Observation.where({"code": "http://loinc.org|8867-4"}).include("subject")
    assert "_include=Observation:subject" in search.construct()
    resources = list(search.perform_resources_iter(server))
    assert sorted(type(r).__name__ for r in resources) == ["Observation"] * 3 + ["Patient"]

    # _revinclude=Observation:subject from the patient's side.
    search = Patient.where({"identifier": f"{MRN}|I-1"}).include("subject", Observation, reverse=True)
    resources = list(search.perform_resources_iter(server))
    assert [r.id for r in resources if isinstance(r, Patient)] == [patient.id]
    assert len([r for r in resources if isinstance(r, Observation)]) == 3

    # Paging: 3 observations, 2 per page -> 2 bundles reached through Bundle.link[next].
    pages = list(Observation.where({"subject": f"Patient/{patient.id}", "_count": "2"}).perform_iter(server))
    assert [len(page.entry or []) for page in pages] == [2, 1]
    seen = [entry.resource.id for page in pages for entry in page.entry or []]
    assert len(seen) == len(set(seen)) == 3


def test_fhirclient_posts_a_transaction_bundle(smart: FHIRClient) -> None:
    server = smart_server(smart)
    entries = []
    for full_url, resource in [
        (
            "urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0",
            smart_patient("Haddad", "Omar", "T-1", "1966-06-06"),
        ),
        (None, smart_observation("urn:uuid:0c3151bd-1cbf-4d64-b04d-cd9187a4c6e0", "8310-5", "warm")),
    ]:
        entry = BundleEntry()
        entry.fullUrl = full_url
        entry.resource = resource
        entry.request = BundleEntryRequest()
        entry.request.method = "POST"
        entry.request.url = resource.resource_type
        entries.append(entry)
    bundle = Bundle()
    bundle.type = "transaction"
    bundle.entry = entries
    assert bundle.createPath() is None  # fhirclient posts transactions to the base URL
    answer = Bundle(bundle.create(server))
    assert answer.type == "transaction-response"
    assert [e.response.status for e in answer.entry] == ["201 Created", "201 Created"]
    patient, observation = (e.resource for e in answer.entry)
    assert isinstance(patient, Patient) and isinstance(observation, Observation)
    assert observation.subject.reference == f"Patient/{patient.id}"


# ------------------------------------------------------------------------------------------ fhirpy


@pytest.fixture
def fhirpy(server: LiveServer) -> Iterator[SyncFHIRClient]:
    yield SyncFHIRClient(server.fhir, authorization=server.headers["Authorization"])


def fhirpy_patient(client: SyncFHIRClient, family: str, mrn: str, born: str, **extra: Any) -> Any:
    return client.resource(
        "Patient",
        name=[{"family": family, "given": ["Test"]}],
        identifier=[{"system": MRN, "value": mrn}],
        birthDate=born,
        **extra,
    )


def test_fhirpy_create_read_update_delete(fhirpy: SyncFHIRClient) -> None:
    patient = fhirpy_patient(fhirpy, "Adeyemi", "P-1", "1979-05-05", gender="female")
    patient.save()  # POST
    assert patient.id and patient["meta"]["versionId"] == "1"

    fetched = fhirpy.reference("Patient", patient.id).to_resource()
    assert fetched.id == patient.id and fetched["meta"] == patient["meta"]
    assert fhirpy.get("Patient", patient.id) == dict(patient)
    assert fetched["birthDate"] == "1979-05-05"

    fetched["gender"] = "unknown"
    fetched.save()  # PUT with the id
    assert fetched["meta"]["versionId"] == "2"
    patient.refresh()
    assert patient["gender"] == "unknown" and patient["meta"]["versionId"] == "2"

    # A client-chosen id: update-as-create.
    chosen = fhirpy_patient(fhirpy, "Adeyemi", "P-2", "1980-01-01", id="adeyemi-2")
    chosen.save()
    assert chosen["meta"]["versionId"] == "1"
    assert fhirpy.get("Patient", "adeyemi-2")["identifier"][0]["value"] == "P-2"

    patient.delete()
    with pytest.raises(ResourceNotFound):
        fhirpy.get("Patient", patient.id)
    fhirpy.delete("Patient", "adeyemi-2")
    assert fhirpy.resources("Patient").fetch_all() == []

    invalid = fhirpy.resource("Patient", gender="robot")
    with pytest.raises(OperationOutcome) as error:
        invalid.save()
    assert "gender" in str(error.value)


def test_fhirpy_search(fhirpy: SyncFHIRClient) -> None:
    created = {}
    for family, mrn, born in [
        ("Nakamura", "Q-1", "1950-01-01"),
        ("Nakamura", "Q-2", "1992-09-12"),
        ("Osei", "Q-3", "1992-12-31"),
    ]:
        patient = fhirpy_patient(fhirpy, family, mrn, born)
        patient.save()
        created[mrn] = patient.id
    patients = fhirpy.resources("Patient")

    def ids(search: Any) -> set[str]:
        return {p.id for p in search.fetch_all()}

    assert ids(patients.search(family="Nakamura")) == {created["Q-1"], created["Q-2"]}
    assert ids(patients.search(name="osei")) == {created["Q-3"]}
    assert ids(patients.search(identifier=f"{MRN}|Q-2")) == {created["Q-2"]}
    assert patients.search(identifier=f"{MRN}|Q-3").get().id == created["Q-3"]
    assert ids(patients.search(birthdate="1992")) == {created["Q-2"], created["Q-3"]}
    # fhirpy's `__ge` suffix becomes the R4 prefix: birthdate=ge1992-10-01
    assert ids(patients.search(birthdate__ge="1992-10-01")) == {created["Q-3"]}
    assert ids(patients.search(birthdate__lt="1992-10-01", family="Nakamura")) == {
        created["Q-1"],
        created["Q-2"],
    }
    ordered = patients.sort("-birthdate").fetch_all()
    assert [p.id for p in ordered] == [created["Q-3"], created["Q-2"], created["Q-1"]]
    assert patients.search(family="Nakamura").first() is not None
    with pytest.raises(ResourceNotFound):
        patients.search(identifier=f"{MRN}|none").get()


def test_fhirpy_paging_follows_next_links(fhirpy: SyncFHIRClient) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Patient",
                    "identifier": [{"system": MRN, "value": f"G-{n:02}"}],
                },
                "request": {"method": "POST", "url": "Patient"},
            }
            for n in range(23)
        ],
    }
    fhirpy.execute("", method="post", data=bundle)
    search = fhirpy.resources("Patient").limit(5)
    first_page = search.fetch()
    assert len(first_page) == 5
    everything = search.fetch_all()  # 5 pages of 5, 5, 5, 5, 3
    assert len(everything) == 23
    assert len({p.id for p in everything}) == 23
    values = sorted(p["identifier"][0]["value"] for p in everything)
    assert values == [f"G-{n:02}" for n in range(23)]
    # The raw bundle of the first page names the next one.
    raw = search.fetch_raw()
    assert [link["relation"] for link in raw["link"]][:2] == ["self", "next"]


def test_fhirpy_references_and_includes(fhirpy: SyncFHIRClient) -> None:
    organization = fhirpy.resource("Organization", name="Garrison Clinic")
    organization.save()
    patient = fhirpy_patient(
        fhirpy, "Ruiz", "R-1", "1988-08-08", managingOrganization=organization.to_reference()
    )
    patient.save()
    assert patient["managingOrganization"]["reference"] == f"Organization/{organization.id}"
    for value in (72, 75):
        fhirpy.resource(
            "Observation",
            status="final",
            code={"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            subject=patient.to_reference(),
            valueQuantity={
                "value": value,
                "unit": "/min",
                "system": "http://unitsofmeasure.org",
                "code": "/min",
            },
        ).save()

    # A reference resolves back to the resource.
    stored = fhirpy.reference("Patient", patient.id).to_resource()
    assert stored["managingOrganization"].to_resource()["name"] == "Garrison Clinic"

    observations = fhirpy.resources("Observation").search(subject=patient.to_reference().reference)
    assert len(observations.fetch_all()) == 2
    assert len(fhirpy.resources("Observation").search(patient=patient.id).fetch_all()) == 2

    raw = observations.include("Observation", "subject").fetch_raw()
    modes = sorted((e["resource"]["resourceType"], e["search"]["mode"]) for e in raw["entry"])
    assert modes == [("Observation", "match"), ("Observation", "match"), ("Patient", "include")]

    raw = (
        fhirpy.resources("Patient")
        .search(_id=patient.id)
        .include("Patient", "organization")
        .revinclude("Observation", "subject")
        .fetch_raw()
    )
    kinds = sorted(e["resource"]["resourceType"] for e in raw["entry"])
    assert kinds == ["Observation", "Observation", "Organization", "Patient"]

    # Chained search through the reference.
    chained = fhirpy.resources("Observation").search(**{"subject:Patient.identifier": f"{MRN}|R-1"})
    assert len(chained.fetch_all()) == 2


def test_fhirpy_conditional_update_and_delete(fhirpy: SyncFHIRClient) -> None:
    patients = fhirpy.resources("Patient").search(identifier=f"{MRN}|C-1")
    created, was_created = patients.update(fhirpy_patient(fhirpy, "Kowalski", "C-1", "1970-07-07"))
    assert was_created and created.id
    updated, was_created = patients.update(
        fhirpy_patient(fhirpy, "Kowalski", "C-1", "1970-07-07", gender="male")
    )
    assert not was_created and updated.id == created.id and updated["meta"]["versionId"] == "2"
    assert patients.delete()[1] == 204
    with pytest.raises(ResourceNotFound):
        fhirpy.get("Patient", created.id)


def test_fhirpy_validate(fhirpy: SyncFHIRClient) -> None:
    assert fhirpy_patient(fhirpy, "Valid", "V-1", "2000-01-01").is_valid() is True
    assert fhirpy.resource("Patient", birthDate="2000-13-01").is_valid() is False
