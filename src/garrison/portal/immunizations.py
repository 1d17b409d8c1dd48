"""Immunizations, grouped by vaccine, with the military and travel vaccines in a section of their
own, and the ones due now when that is easy to tell.

Doses are grouped by what they protect against, as a patient thinks of them ("Flu", "Tetanus,
diphtheria, whooping cough"), using CVX codes (https://www2a.cdc.gov/vaccines/iis/iisstandards/
vaccines.asp?rpt=cvx); each dose keeps its exact product name. Vaccines the services give for
deployment and travel (anthrax, smallpox, typhoid, Japanese encephalitis, yellow fever,
adenovirus, rabies, cholera) are listed as "Military and travel vaccines", as the services'
readiness records (MEDPROS, ASIMS) show them.

Only two reminders are derived, because they need nothing but the record's own doses and the
date of birth: a flu vaccine every season (from 6 months old), and a tetanus booster every 10
years for adults (CDC adult schedule). Everything else is for the care team to say.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime

from garrison import clock
from garrison.fhir.repository import Repository
from garrison.portal.labs import audit_shown, record_patient, search_all
from garrison.portal.record_text import (
    CVX,
    Json,
    When,
    concept_text,
    first_code,
    first_when,
    reference_display,
)

# CVX code -> the groups it counts for, as (name, military/travel vaccine): a combination vaccine
# (DTaP-HepB-IPV, MMRV) counts for each disease it protects against, as on the CDC schedule.
_GROUPS: dict[str, list[tuple[str, bool]]] = {}
for _name, _military, _codes in (
    (
        "Flu (influenza)",
        False,
        "88 111 135 140 141 144 149 150 151 153 155 158 161 166 168 171 185 186 197 200 201 202 205",
    ),
    ("COVID-19", False, "207 208 210 211 212 213 217 218 219 221 228 229 230 300 301 302 309 310 311 312"),
    (
        "Tetanus, diphtheria, whooping cough",
        False,
        "01 09 20 22 28 50 102 106 107 110 113 115 120 130 138 139 146 170 196",
    ),
    ("Hepatitis A", False, "31 52 83 84 85 104 169"),
    ("Hepatitis B", False, "08 42 43 44 45 51 102 104 110 146 189 220"),
    ("Measles, mumps, rubella", False, "03 04 05 06 07 38 94"),
    ("Chickenpox (varicella)", False, "21 94"),
    ("Polio", False, "02 10 89 110 120 130 146 182"),
    ("Haemophilus influenzae type b (Hib)", False, "17 46 47 48 49 50 51 120 146 148"),
    ("Pneumococcal", False, "33 100 109 133 152 215 216"),
    ("Rotavirus", False, "116 119 122"),
    ("Meningococcal", False, "32 103 108 114 136 147 148 162 163 164 167 203 316"),
    ("Human papillomavirus (HPV)", False, "62 118 137 165"),
    ("Shingles (zoster)", False, "121 187 188"),
    ("Anthrax", True, "24 318"),
    ("Smallpox and mpox", True, "75 105 206"),
    ("Typhoid", True, "25 41 53 91 101 190"),
    ("Japanese encephalitis", True, "39 129 134"),
    ("Yellow fever", True, "37 183 184"),
    ("Adenovirus", True, "54 55 82 143"),
    ("Rabies", True, "18 40 90 175 176"),
    ("Cholera", True, "26 172 173 174"),
):
    for _code in _codes.split():
        _GROUPS.setdefault(_code, []).append((_name, _military))

FLU = "Flu (influenza)"
TETANUS = "Tetanus, diphtheria, whooping cough"


@dataclass(frozen=True)
class Dose:
    id: str
    product: str
    when: When | None
    given: bool  # False for a dose recorded as not given
    status: str  # "Given", "Not given (patient objection)"
    where: str
    lot: str


@dataclass(frozen=True)
class VaccineGroup:
    name: str
    military: bool
    doses: list[Dose]  # newest first

    @property
    def last_given(self) -> When | None:
        return next((d.when for d in self.doses if d.given and d.when is not None), None)


@dataclass(frozen=True)
class DueVaccine:
    name: str
    why: str


@dataclass(frozen=True)
class ImmunizationRecord:
    routine: list[VaccineGroup]
    military: list[VaccineGroup]
    due: list[DueVaccine]


def _groups_of(vaccine: Json) -> list[tuple[str, str, bool]]:
    """(group key, group name, military) of each group a vaccineCode counts for."""
    cvx = first_code(vaccine, CVX)
    if cvx is not None:
        known = _GROUPS.get(cvx.zfill(2)) or _GROUPS.get(cvx)
        if known:
            return [(name, name, military) for name, military in known]
    name = concept_text(vaccine) or "Vaccine"
    return [(f"other:{cvx or name}", name, False)]


def _where(immunization: Json) -> str:
    performers = immunization.get("performer")
    actor = performers[0].get("actor") if isinstance(performers, list) and performers else None
    return reference_display(immunization.get("location")) or reference_display(actor)


def immunizations(repo: Repository, *, birth_date: date | None = None) -> ImmunizationRecord:
    """Every dose in the record, grouped; `birth_date` enables the due reminders."""
    patient = record_patient(repo)
    matches = search_all(repo, "Immunization", [("patient", patient), ("_sort", "-date")])
    groups: dict[str, VaccineGroup] = {}
    for stored in matches:
        body = stored.parsed()
        status = str(body.get("status") or "")
        if status == "entered-in-error":
            continue
        reason = concept_text(body.get("statusReason"))
        not_given = f"Not given ({reason.lower()})" if reason else "Not given"
        memberships = _groups_of(body.get("vaccineCode") or {})
        dose = Dose(
            id=stored.id,
            product=concept_text(body.get("vaccineCode")) or memberships[0][1],
            when=first_when(body.get("occurrenceDateTime"), body.get("recorded")),
            given=status != "not-done",
            status=not_given if status == "not-done" else "Given",
            where=_where(body),
            lot=str(body.get("lotNumber") or ""),
        )
        for key, name, military in memberships:
            group = groups.get(key)
            if group is None:
                group = groups[key] = VaccineGroup(name, military, [])
            group.doses.append(dose)
    for group in groups.values():
        group.doses.sort(key=lambda d: d.when.moment if d.when else _EPOCH, reverse=True)
    ordered = sorted(groups.values(), key=lambda g: g.name.lower())
    due = due_vaccines(ordered, birth_date) if birth_date is not None else []
    audit_shown(repo, "immunizations", matches)
    return ImmunizationRecord([g for g in ordered if not g.military], [g for g in ordered if g.military], due)


_EPOCH = datetime.min.replace(tzinfo=UTC)  # undated doses sort last


def due_vaccines(groups: list[VaccineGroup], birth_date: date, today: date | None = None) -> list[DueVaccine]:
    """The flu vaccine of this season and the adult tetanus booster, when the record lacks them."""
    today = today or clock.now().date()
    age_days = (today - birth_date).days
    by_name = {g.name: g for g in groups}
    due: list[DueVaccine] = []
    # The flu season's vaccine is offered from August (CDC); a dose since 1 August counts.
    season_start = date(today.year if today.month >= 8 else today.year - 1, 8, 1)
    flu = by_name.get(FLU)
    last_flu = flu.last_given if flu is not None else None
    if age_days >= 183 and (last_flu is None or last_flu.day < season_start):
        since = season_start.strftime("%B %Y")
        why = f"Everyone 6 months and older, once each season (since {since})."
        due.append(DueVaccine("Flu vaccine", why))
    tetanus = by_name.get(TETANUS)
    last_tetanus = tetanus.last_given if tetanus is not None else None
    if age_days >= 19 * 365 and (last_tetanus is None or (today - last_tetanus.day).days > 10 * 365 + 2):
        due.append(DueVaccine("Tetanus booster (Td or Tdap)", "Adults, every 10 years."))
    return due
