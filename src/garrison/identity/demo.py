"""Demo sign-ins over the synthetic population: a physician (with an authenticator code), a privacy
officer, a health-information manager (duplicates, merges), a front-desk registrar at the
physician's facility, a patient who is also a parent acting for their child under 13 (full
access), and a proxy for another child, aged 13 to 17 when the population has one (limited
access). One more adult gets a portal activation code instead of an account, so a new user can
try first-time activation.

Passwords and TOTP secrets are made fresh when the accounts are created, printed once by
`garrison demo` and kept in the data directory (mode 0600): demo data is synthetic, and no secret
ever lives in the repository.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select

from garrison import clock
from garrison.beneficiaries.ages import age_on
from garrison.beneficiaries.vocabulary import EDIPI, PROXY_ACCOUNT
from garrison.callers import ADOLESCENT_AGE, ADULT_AGE
from garrison.db.engine import write_transaction
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.identity import activation
from garrison.identity.accounts import create_account, enable_totp, find_account
from garrison.identity.portal_tables import activation_code
from garrison.settings import Settings

CREDENTIALS_FILE = "demo-accounts.txt"
DEMO_JOB = "system/demo-accounts"
DEMO_USERNAMES = ("dr.demo", "privacy.demo", "him.demo", "desk.demo", "patient.demo", "proxy.demo")


@dataclass(frozen=True)
class DemoAccount:
    username: str
    password: str
    role: str
    acts_as: str
    totp_secret: str | None = None


def _first(repo: Repository, resource_type: str, params: list[tuple[str, str]]) -> dict[str, Any] | None:
    page = repo.search(SearchRequest(resource_type, [*params, ("_count", "1"), ("_sort", "_id")]))
    return page.matches[0].parsed() if page.matches else None


def _guardianships(repo: Repository) -> list[tuple[dict[str, Any], int]]:
    """Active guardianships of children under 18 today, with the child's age, by id. Age decides
    what a parent sees (garrison.callers), so the demo picks its families by age."""
    page = repo.search(
        SearchRequest(
            "RelatedPerson",
            [
                ("relationship", "GUARD"),
                ("_include", "RelatedPerson:patient"),
                ("_count", "200"),
                ("_sort", "_id"),
            ],
        )
    )
    births = {s.id: s.parsed().get("birthDate") for s in page.included if s.resource_type == "Patient"}
    today = clock.now().date()
    found: list[tuple[dict[str, Any], int]] = []
    for stored in page.matches:
        related = stored.parsed()
        child = str(related.get("patient", {}).get("reference", "")).removeprefix("Patient/")
        age = age_on(births.get(child), today)
        if related.get("active") is not False and age is not None and age < ADULT_AGE:
            found.append((related, age))
    return found


def _sponsor_edipi(related: dict[str, Any]) -> str | None:
    return next((i["value"] for i in related.get("identifier", []) if i.get("system") == EDIPI), None)


def _demo_families(repo: Repository) -> tuple[dict[str, Any], dict[str, Any]]:
    """The patient.demo parent's guardianship (a child under 13 whose parent has a record) and
    proxy.demo's (another family's child, 13 to 17 if there is one)."""
    links = _guardianships(repo)
    with_sponsor = [
        (related, age)
        for related, age in links
        if (edipi := _sponsor_edipi(related))
        and _first(repo, "Patient", [("identifier", f"{EDIPI}|{edipi}")])
    ]
    young = [pair for pair in with_sponsor if pair[1] < ADOLESCENT_AGE]
    chosen = (young or sorted(with_sponsor, key=lambda pair: pair[1]))[:1]
    if not chosen:
        raise RuntimeError("the demo population has no families with children to sign in as")
    parent_link = chosen[0][0]
    others = [
        (related, age)
        for related, age in links
        if related["id"] != parent_link["id"] and related["patient"] != parent_link["patient"]
    ]
    if not others:
        raise RuntimeError("the demo population has no families with children to sign in as")
    # A teenager first (limited access), preferably in another family, and the youngest of them
    # (the demo keeps working longest before they turn 18).
    ranked = sorted(
        others,
        key=lambda pair: (
            pair[1] < ADOLESCENT_AGE,
            _sponsor_edipi(pair[0]) == _sponsor_edipi(parent_link),
            pair[1],
        ),
    )
    return parent_link, ranked[0][0]


def _grant_proxy(repo: Repository, related: dict[str, Any], account_id: str) -> None:
    identifiers = [i for i in related.get("identifier", []) if i.get("system") != PROXY_ACCOUNT]
    related["identifier"] = [*identifiers, {"system": PROXY_ACCOUNT, "value": account_id}]
    repo.update("RelatedPerson", related["id"], related)


def ensure_demo_accounts(
    engine: Engine, definitions: Definitions, settings: Settings
) -> list[DemoAccount] | None:
    """Create the demo accounts once; None when they exist already (see the credentials file).

    Accounts added to the demo later are created in an existing demo database too, and their
    credentials appended to the file.
    """
    created: list[DemoAccount] = []
    with write_transaction(engine) as connection:
        existing = {name for name in DEMO_USERNAMES if find_account(connection, name) is not None}
    if len(existing) == len(DEMO_USERNAMES):
        ensure_demo_activation(engine, definitions, settings)  # demo databases made before it existed
        return None
    with write_transaction(engine) as connection:
        repo = Repository(connection, definitions, settings, AccessContext.system("demo-accounts"))
        parent_link, proxy_link = _demo_families(repo)
        sponsor_edipi = next(i["value"] for i in parent_link["identifier"] if i.get("system") == EDIPI)
        sponsor = _first(repo, "Patient", [("identifier", f"{EDIPI}|{sponsor_edipi}")])
        child = _first(repo, "Patient", [("_id", parent_link["patient"]["reference"].split("/")[1])])
        if sponsor is None or child is None:
            raise RuntimeError("the demo family's records are incomplete")
        facility = str(child.get("managingOrganization", {}).get("reference", "Organization/")).split("/")[1]
        practitioner = "Practitioner/demo"
        primary_care: list[dict[str, Any]] = child.get("generalPractitioner", [])
        role_ref = str(primary_care[0].get("reference", "")) if primary_care else ""
        if role_ref.startswith("PractitionerRole/"):
            role = repo.read("PractitionerRole", role_ref.split("/")[1]).parsed()
            practitioner = role.get("practitioner", {}).get("reference", practitioner)
            facility = role.get("organization", {}).get("reference", f"Organization/{facility}").split("/")[1]

        def add(
            username: str, kind: str, role: str, fhir_user: str, name: str, *, totp: bool, **extra: Any
        ) -> str | None:
            if username in existing:
                return None
            password = secrets.token_urlsafe(12)
            account = create_account(
                connection,
                username=username,
                kind=kind,  # type: ignore[arg-type]
                role=role,
                display_name=name,
                fhir_user=fhir_user,
                password=password,
                actor=DEMO_JOB,
                actor_role="system",
                **extra,
            )
            secret = (
                enable_totp(connection, account.id, actor=DEMO_JOB, actor_role="system").secret
                if totp
                else None
            )
            created.append(DemoAccount(username, password, role, fhir_user, secret))
            return account.id

        add("dr.demo", "staff", "physician", practitioner, "Dr. Demo", totp=True, facility=facility)
        add(
            "privacy.demo",
            "staff",
            "privacy_officer",
            "Practitioner/privacy-demo",
            "Privacy Officer",
            totp=True,
        )
        add(
            "him.demo",
            "staff",
            "him",
            "Practitioner/him-demo",
            "Health Information Manager",
            totp=True,
            facility=facility,
        )
        add(
            "desk.demo",
            "staff",
            "front_desk",
            "Practitioner/desk-demo",
            "Front Desk",
            totp=True,
            facility=facility,
        )
        parent = add(
            "patient.demo", "patient", "patient", f"Patient/{sponsor['id']}", "Demo Sponsor", totp=False
        )
        if parent is not None:
            _grant_proxy(repo, parent_link, parent)
        proxy = add(
            "proxy.demo", "proxy", "proxy", f"RelatedPerson/{proxy_link['id']}", "Demo Guardian", totp=False
        )
        if proxy is not None:
            _grant_proxy(repo, proxy_link, proxy)
    _save(settings.data_dir / CREDENTIALS_FILE, created, append=bool(existing))
    ensure_demo_activation(engine, definitions, settings)
    return created


@dataclass(frozen=True)
class DemoActivation:
    """A patient without an account, and the activation code to try /portal/activate with."""

    edipi: str
    birth_date: str
    code: str
    name: str
    expires: str


def ensure_demo_activation(
    engine: Engine, definitions: Definitions, settings: Settings
) -> DemoActivation | None:
    """Issue one activation code (once per demo database) to an adult with a DoD ID, an email
    address (so the password reset can be tried too) and no account, and append it to the
    credentials file. None when the demo has one already, or nobody is left to activate."""
    with write_transaction(engine) as connection:
        if _demo_code_issued(connection):
            return None
        repo = Repository(connection, definitions, settings, AccessContext.system("demo-accounts"))
        physician = find_account(connection, "dr.demo")
        patient_id = _activation_candidate(repo, physician.facility if physician is not None else None)
        if patient_id is None:
            return None
        issued = activation.issue_code(repo, patient_id)
    found = DemoActivation(
        issued.edipi, issued.birth_date, issued.code, issued.name, f"{issued.expires:%Y-%m-%d}"
    )
    path = settings.data_dir / CREDENTIALS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    with path.open("a", encoding="utf-8") as out:
        out.write(describe_activation(found) + "\n")
    return found


def describe_activation(found: DemoActivation) -> str:
    return (
        f"{'activation':<14} at /portal/activate: DoD ID {found.edipi}, date of birth {found.birth_date}, "
        f"code {found.code} ({found.name}; usable once, until {found.expires})"
    )


def activation_note(settings: Settings) -> str | None:
    """The activation line of the credentials file (for `garrison demo` to print)."""
    path = settings.data_dir / CREDENTIALS_FILE
    if not path.exists():
        return None
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.startswith("activation ")]
    return lines[-1] if lines else None


def _demo_code_issued(connection: Connection) -> bool:
    return (
        connection.execute(
            select(activation_code.c.id).where(activation_code.c.issued_by == DEMO_JOB).limit(1)
        ).first()
        is not None
    )


def _activation_candidate(repo: Repository, facility: str | None) -> str | None:
    """Someone registered at the demo physician's facility first: the new user's messages then
    reach the pool dr.demo answers, and the scheduling demo's clinic time is at their facility,
    so a new user can try everything in the demo. Anyone else otherwise."""
    near = [[("organization", f"Organization/{facility}")]] if facility else []
    for params in [*near, []]:
        found = _first_candidate(repo, params)
        if found is not None:
            return found
    return None


def _first_candidate(repo: Repository, params: list[tuple[str, str]]) -> str | None:
    page = repo.search(SearchRequest("Patient", [*params, ("_count", "200"), ("_sort", "_id")]))
    today = clock.now().date()
    for stored in page.matches:
        patient = stored.parsed()
        edipi = activation.edipi_of(patient)
        age = age_on(patient.get("birthDate"), today)
        has_email = any(t.get("system") == "email" for t in patient.get("telecom", []))
        if patient.get("active") is False or edipi is None or age is None or age < ADULT_AGE or not has_email:
            continue
        # Not a relative of the demo's accounts, and nobody else has an account for them.
        if activation.existing_account(repo.connection, stored.id, edipi) is not None:
            continue
        if _guardian_of_demo(repo, edipi):
            continue
        return stored.id
    return None


def _guardian_of_demo(repo: Repository, edipi: str) -> bool:
    """Whether this person is the sponsor in a guardianship a demo account acts through."""
    links = repo.search(
        SearchRequest("RelatedPerson", [("identifier", f"{EDIPI}|{edipi}"), ("_count", "50")])
    )
    return any(
        any(i.get("system") == PROXY_ACCOUNT for i in link.parsed().get("identifier", []))
        for link in links.matches
    )


def _save(path: Path, accounts: list[DemoAccount], *, append: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    with path.open("a" if append else "w", encoding="utf-8") as out:
        out.write("".join(describe(a) + "\n" for a in accounts))


def describe(account: DemoAccount) -> str:
    line = f"{account.username:<14} password {account.password}  ({account.role}, {account.acts_as})"
    if account.totp_secret:
        line += f"\n{'':<14} authenticator secret {account.totp_secret} (TOTP, 30 s, 6 digits)"
    return line
