"""Family (proxy) access: whose records a portal user acts for, and sharing one's own record
with another adult.

The rules (`garrison.callers.proxy_grants` applies them on every request):
- A parent or guardian has full access to a child's record until the child turns 13, limited
  access from 13 to 17 (what a teenager shares in confidence is withheld, AAP 2023), and none
  from 18. Guardianships are recorded by the clinic (RelatedPerson with relationship GUARD),
  never changed here.
- An adult (18 or older) may share their own record with another adult who has a portal
  account, with a scope (`PROXY_SCOPES`: everything, or appointments, messages and refills) and
  an end date at most a year away, and may revoke it at any time. The grant is a RelatedPerson
  on the owner's record carrying the grantee's account (identifier PROXY_ACCOUNT) and the scope
  (extension PROXY_SCOPE); revoking sets it inactive and ends its period today, and the
  grantee's next request no longer reaches the record.
- Only the owner shares: someone acting for another person's record cannot pass it on.

Every function takes a Repository bound to the signed-in user's context with the record in view.
Two steps go through a narrow system Repository, and only after the owner's checks above:
finding the grantee by DoD ID and last name (a patient cannot search other people's records),
and writing the grant. Patients get no write access to RelatedPerson in the access policy on
purpose: through the FHIR API that would let any patient token (a 15-year-old's, or a
third-party app's) write grants with no age, scope or end-date checks, or change the
guardianships on their record.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection, select

from garrison import clock
from garrison.beneficiaries.ages import age_on
from garrison.beneficiaries.vocabulary import EDIPI, PROXY_ACCOUNT, PROXY_SCOPE
from garrison.callers import ADOLESCENT_AGE, ADULT_AGE, PROXY_SCOPES
from garrison.errors import BadRequest, Forbidden
from garrison.fhir.access import AccessContext
from garrison.fhir.audit_trail import access_records
from garrison.fhir.names import short_name
from garrison.fhir.repository import Repository
from garrison.fhir.search.query import SearchRequest
from garrison.identity.accounts import find_account_by_edipi
from garrison.identity.activation import normalize_edipi
from garrison.identity.model import Account, account_from_row
from garrison.identity.tables import account
from garrison.portal.viewing import RecordChoice

SHARE_JOB = "portal-family-sharing"
LONGEST_SHARE = timedelta(days=365)
NO_SUCH_PERSON = (
    "We could not find a portal account for that DoD ID and last name. Check both, and make sure "
    "the person has activated their own portal account."
)
NOT_THE_OWNER = "Only the person whose record this is can share it or change who it is shared with."
TOO_YOUNG = f"You can share your record with another adult once you are {ADULT_AGE}."
NO_OWN_RECORD = "This account acts for others and has no record of its own to share."


class ShareRefused(BadRequest):
    """The share form has a problem the user can fix; `field` names the form field."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True, slots=True)
class ActingFor:
    """A record the user acts for, as the family page explains it."""

    choice: RecordChoice
    age: int | None
    next_change: str | None  # what happens next, in words ("limited access from 2031-04-02")


@dataclass(frozen=True, slots=True)
class Share:
    """Someone the user shares their own record with."""

    related_person_id: str
    name: str
    scope: str
    start: str | None
    ends: str | None

    @property
    def scope_words(self) -> str:
        return PROXY_SCOPES.get(self.scope, self.scope)


@dataclass(frozen=True, slots=True)
class FamilyOverview:
    acting_for: tuple[ActingFor, ...]
    viewing_own: bool
    shares: tuple[Share, ...]  # only when the user's own record is in view
    may_share: bool
    why_not: str | None  # why the share form is not offered
    default_end: str
    latest_end: str


def overview(repo: Repository, choices: Sequence[RecordChoice]) -> FamilyOverview:
    """The family page: records the user acts for (from the record switcher's choices) and, when
    their own record is in view, whom they share it with."""
    today = clock.now().date()
    acting = tuple(_acting_for(choice, today) for choice in choices if not choice.is_self)
    own = owner_of(repo.context)
    shares: tuple[Share, ...] = ()
    why_not: str | None = None
    if own is None:
        has_own = any(choice.is_self for choice in choices)
        why_not = NOT_THE_OWNER if has_own else NO_OWN_RECORD
    else:
        patient = repo.read("Patient", own).parsed()
        age = age_on(patient.get("birthDate"), today)
        if age is None or age < ADULT_AGE:
            why_not = TOO_YOUNG
        shares = tuple(shares_of(repo, own))
    return FamilyOverview(
        acting_for=acting,
        viewing_own=own is not None,
        shares=shares,
        may_share=own is not None and why_not is None,
        why_not=why_not,
        default_end=(today + LONGEST_SHARE).isoformat(),
        latest_end=(today + LONGEST_SHARE).isoformat(),
    )


def shares_of(repo: Repository, patient_id: str) -> list[Share]:
    """Current grants on the patient's record (active, in period), soonest to end first."""
    page = repo.search(
        SearchRequest("RelatedPerson", [("patient", f"Patient/{patient_id}"), ("_count", "100")])
    )
    day = clock.now().date().isoformat()
    found: list[Share] = []
    for stored in page.matches:
        related = stored.parsed()
        scope = _scope_of(related)
        account_id = _account_of(related)
        if scope is None or account_id is None or related.get("active") is False:
            continue
        period = related.get("period") or {}
        if str(period.get("end", "9999"))[:10] < day:
            continue
        found.append(Share(stored.id, _name_of(related), scope, period.get("start"), period.get("end")))
    return sorted(found, key=lambda s: (s.ends or "9999", s.name))


def share(repo: Repository, *, dod_id: str, last_name: str, scope: str, ends: str | None = None) -> Share:
    """Share the owner's record (the one in view) with the adult holding `dod_id`'s portal
    account. A grant that already exists for that person is changed to the new scope and end."""
    own = _require_owner(repo)
    today = clock.now().date()
    patient = repo.read("Patient", own).parsed()
    age = age_on(patient.get("birthDate"), today)
    if age is None or age < ADULT_AGE:
        raise Forbidden(TOO_YOUNG)
    if scope not in PROXY_SCOPES:
        raise ShareRefused("Choose how much of your record to share.", "scope")
    end = _end_date(ends, today)
    edipi = normalize_edipi(dod_id)
    if edipi is None:
        raise ShareRefused("Enter the person's DoD ID: the 10 digits on their ID card.", "dod_id")
    if not _clean(last_name):
        raise ShareRefused("Enter the person's last name as it appears on their ID card.", "last_name")
    system = _system(repo)
    found = _grantee(system, edipi, last_name)
    if found is None:
        raise ShareRefused(NO_SUCH_PERSON, "dod_id")
    grantee, name = found
    if grantee.id == repo.context.account or grantee.fhir_user == f"Patient/{own}":
        raise ShareRefused(
            "That is your own account. Enter the DoD ID of the person you want to share with.", "dod_id"
        )
    existing = next(
        (s for s in system_grants(system, own) if _account_of(s) == grantee.id and _is_current(s, today)),
        None,
    )
    period = {"start": today.isoformat(), "end": end.isoformat()}
    if existing is not None:
        existing["extension"] = [
            *[e for e in existing.get("extension", []) if e.get("url") != PROXY_SCOPE],
            {"url": PROXY_SCOPE, "valueCode": scope},
        ]
        existing["period"] = {
            "start": (existing.get("period") or {}).get("start", period["start"]),
            "end": period["end"],
        }
        existing["active"] = True
        stored = system.update("RelatedPerson", str(existing["id"]), existing).stored
    else:
        body: dict[str, Any] = {
            "resourceType": "RelatedPerson",
            "extension": [{"url": PROXY_SCOPE, "valueCode": scope}],
            "identifier": [{"system": PROXY_ACCOUNT, "value": grantee.id}],
            "active": True,
            "patient": {"reference": f"Patient/{own}"},
            "period": period,
        }
        if name:
            body["name"] = [name]
        stored = system.create(body).stored
    repo.audit.extend(system.audit)
    result = stored.parsed()
    repo.audit.extend(
        access_records(
            repo.context,
            "portal:family:share",
            (),
            {
                "related_person": f"RelatedPerson/{stored.id}",
                "grantee": grantee.id,
                "scope": scope,
                "ends": end.isoformat(),
            },
        )
    )
    return Share(
        stored.id, _name_of(result), scope, result["period"].get("start"), result["period"].get("end")
    )


def revoke(repo: Repository, related_person_id: str) -> Share:
    """End a grant the owner gave: inactive, period ending today. Guardianships are not grants
    (the clinic records and ends them), so they cannot be revoked here."""
    own = _require_owner(repo)
    related = repo.read("RelatedPerson", related_person_id).parsed()  # their own record only
    scope = _scope_of(related)
    if (
        scope is None
        or _account_of(related) is None
        or related.get("patient", {}).get("reference") != f"Patient/{own}"
    ):
        raise BadRequest(
            "This is not access you gave. A parent's or guardian's access is changed by your clinic."
        )
    today = clock.now().date().isoformat()
    if related.get("active") is not False:
        period = dict(related.get("period") or {})
        period["end"] = today
        if str(period.get("start", today))[:10] > today:
            period["start"] = today
        related["period"] = period
        related["active"] = False
        system = _system(repo)
        system.update("RelatedPerson", related_person_id, related)
        repo.audit.extend(system.audit)
    repo.audit.extend(
        access_records(
            repo.context,
            "portal:family:revoke",
            (),
            {"related_person": f"RelatedPerson/{related_person_id}", "grantee": _account_of(related)},
        )
    )
    period = related.get("period") or {}
    return Share(related_person_id, _name_of(related), scope, period.get("start"), period.get("end"))


def owner_of(context: AccessContext) -> str | None:
    """The patient id when the user has their own record in view, else None."""
    if context.role != "patient" or not context.patient:
        return None
    return context.patient if context.actor == f"Patient/{context.patient}" else None


def system_grants(system: Repository, patient_id: str) -> list[dict[str, Any]]:
    page = system.search(
        SearchRequest(
            "RelatedPerson",
            [("patient", f"Patient/{patient_id}"), ("identifier", f"{PROXY_ACCOUNT}|"), ("_count", "100")],
        )
    )
    return [s.parsed() for s in page.matches if _scope_of(s.parsed()) is not None]


# -- helpers ---------------------------------------------------------------------------------------


def _require_owner(repo: Repository) -> str:
    own = owner_of(repo.context)
    if own is None:
        raise Forbidden(NOT_THE_OWNER)
    return own


def _system(repo: Repository) -> Repository:
    # The narrow system step (see the module doc): audited, and its records join the user's.
    return Repository(
        repo.connection, repo.definitions, repo.settings, AccessContext.system(SHARE_JOB, audited=True)
    )


def _end_date(typed: str | None, today: date) -> date:
    if not typed or not typed.strip():
        return today + LONGEST_SHARE
    try:
        end = date.fromisoformat(typed.strip()[:10])
    except ValueError:
        raise ShareRefused("Enter the end date as a date, for example 2027-06-30.", "ends") from None
    if end <= today:
        raise ShareRefused("The end date must be after today.", "ends")
    if end > today + LONGEST_SHARE:
        raise ShareRefused(
            f"You can share for at most a year: choose {today + LONGEST_SHARE} or earlier.", "ends"
        )
    return end


def _grantee(system: Repository, edipi: str, last_name: str) -> tuple[Account, dict[str, Any]] | None:
    """The portal account of the person with this DoD ID and last name, and their name."""
    connection = system.connection
    holder = find_account_by_edipi(connection, edipi)
    if holder is not None:
        kind, _, resource_id = holder.fhir_user.partition("/")
        stored = system.get_current(kind, resource_id) if kind in ("Patient", "RelatedPerson") else None
        name = _matching_name(stored.parsed() if stored and not stored.deleted else {}, last_name)
        return (holder, name) if name is not None and _usable(holder) else None
    page = system.search(SearchRequest("Patient", [("identifier", f"{EDIPI}|{edipi}"), ("_count", "10")]))
    for stored in page.matches:
        name = _matching_name(stored.parsed(), last_name)
        if name is None:
            continue
        for candidate in _accounts_for(connection, f"Patient/{stored.id}"):
            if _usable(candidate):
                return candidate, name
    return None


def _accounts_for(connection: Connection, fhir_user: str) -> list[Account]:
    rows = connection.execute(select(account).where(account.c.fhir_user == fhir_user)).all()
    return [account_from_row(row) for row in rows]


def _usable(holder: Account) -> bool:
    return holder.kind in ("patient", "proxy") and not holder.disabled


def _matching_name(person: dict[str, Any], last_name: str) -> dict[str, Any] | None:
    wanted = _clean(last_name)
    for name in person.get("name") or []:
        if name.get("use") in ("old", "maiden") or not wanted:
            continue
        if _clean(str(name.get("family", ""))) == wanted:
            kept = {k: name[k] for k in ("use", "family", "given") if k in name}
            return kept
    return None


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()


def _acting_for(choice: RecordChoice, today: date) -> ActingFor:
    age = age_on(choice.birth_date, today)
    change: str | None = None
    if choice.relationship == "guardian" and choice.birth_date and age is not None:
        born = date.fromisoformat(choice.birth_date[:10])
        if age < ADOLESCENT_AGE:
            change = (
                f"From {_birthday(born, ADOLESCENT_AGE)} (age {ADOLESCENT_AGE}) your access becomes limited."
            )
        else:
            change = f"Your access ends on {_birthday(born, ADULT_AGE)} (age {ADULT_AGE})."
    elif choice.ends:
        change = f"Shared with you until {choice.ends[:10]}."
    return ActingFor(choice, age, change)


def _birthday(born: date, years: int) -> str:
    try:
        return born.replace(year=born.year + years).isoformat()
    except ValueError:  # born on 29 February: the birthday is 1 March in other years
        return date(born.year + years, 3, 1).isoformat()


def _scope_of(related: dict[str, Any]) -> str | None:
    return next(
        (
            str(e["valueCode"])
            for e in related.get("extension", [])
            if e.get("url") == PROXY_SCOPE and e.get("valueCode")
        ),
        None,
    )


def _account_of(related: dict[str, Any]) -> str | None:
    return next(
        (
            str(i["value"])
            for i in related.get("identifier", [])
            if i.get("system") == PROXY_ACCOUNT and i.get("value")
        ),
        None,
    )


def _is_current(related: dict[str, Any], today: date) -> bool:
    period = related.get("period") or {}
    return related.get("active") is not False and str(period.get("end", "9999"))[:10] >= today.isoformat()


def _name_of(related: dict[str, Any]) -> str:
    return short_name(related, "Someone without a name on record")
