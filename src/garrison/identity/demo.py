"""Demo sign-ins over the synthetic population: a physician (with an authenticator code), a privacy
officer, a health-information manager (duplicates, merges), a front-desk registrar at the
physician's facility, a patient who is also a parent acting for their child, and a proxy for
another child.

Passwords and TOTP secrets are made fresh when the accounts are created, printed once by
`garrison demo` and kept in the data directory (mode 0600): demo data is synthetic, and no secret
ever lives in the repository.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from garrison.beneficiaries.vocabulary import EDIPI, PROXY_ACCOUNT
from garrison.db.engine import write_transaction
from garrison.fhir.access import AccessContext
from garrison.fhir.definitions import Definitions
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.identity.accounts import create_account, enable_totp, find_account
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


def _guardianships(repo: Repository, count: int) -> list[dict[str, Any]]:
    page = repo.search(
        SearchRequest("RelatedPerson", [("relationship", "GUARD"), ("_count", "50"), ("_sort", "_id")])
    )
    found = [m.parsed() for m in page.matches if m.parsed().get("active") is not False]
    return found[:count]


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
            return None
        repo = Repository(connection, definitions, settings, AccessContext.system("demo-accounts"))
        families = _guardianships(repo, 2)
        if len(families) < 2:
            raise RuntimeError("the demo population has no families with children to sign in as")
        parent_link, proxy_link = families
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
    return created


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
