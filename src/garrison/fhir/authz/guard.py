"""The repository's guard: the access policy and the caller's context, turned into decisions.

Every Repository owns one Guard. Type-level questions (may a nurse create a MedicationRequest?)
are answered from the policy and the token's SMART scopes and refused with 403. Record-level
questions (is this Observation in a record the caller may see?) become SQL conditions that every
read, search, include, history and operation applies, so another patient's resource, or a
labelled one the caller may not see, behaves exactly like one that does not exist: no 403 that
confirms it, no count that includes it.

The conditions bind the caller's values (facility, patients, Consents' patients) as named
parameters (`bound_values`), never as constants, so a search's compiled statements can serve every
caller whose conditions have the same shape (`search_shape`, fhir/search/statements.py).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from functools import cached_property
from typing import Any

from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    and_,
    bindparam,
    exists,
    false,
    literal_column,
    not_,
    or_,
    select,
    true,
)

from garrison.clock import now
from garrison.db.bulk import one_of
from garrison.db.schema import resource, search_reference, search_token
from garrison.errors import Forbidden
from garrison.fhir.access import AccessContext
from garrison.fhir.authz.consent_rules import ConsentRules, consent_rules
from garrison.fhir.authz.policy import AccessPolicy, Interaction, Label, RolePolicy, policy_from
from garrison.fhir.definitions import Definitions
from garrison.fhir.search.aliases import Aliases
from garrison.fhir.search.conditions import ConditionBuilder
from garrison.fhir.search.parse import SearchParser
from garrison.fhir.search.predicates import MatchContext, local_reference
from garrison.settings import Settings

PATIENT = "Patient"
# A condition on a patient id column: whether that patient is among some (`Guard._cared_for`).
PatientTest = Callable[[Any], ColumnElement[bool]]


class Guard:
    """Decisions for one caller. Cheap to build; holds no connection state beyond the statement
    conditions it hands out."""

    def __init__(
        self, definitions: Definitions, settings: Settings, context: AccessContext, connection: Connection
    ) -> None:
        self.definitions = definitions
        self.connection = connection
        self.dialect = connection.dialect.name
        self.settings = settings
        self.context = context
        self.policy: AccessPolicy = policy_from(definitions)
        self.role: RolePolicy | None = self.policy.role(context.role)
        self._compartment = definitions.compartments[PATIENT]

    # ------------------------------------------------------------------------ type level

    @cached_property
    def consents(self) -> ConsentRules:
        """The patients' Consents as they apply to this caller, read once per request."""
        withheld = self.role.withheld_labels if self.role is not None else frozenset()
        return consent_rules(self.connection, self.context, sorted(withheld))

    @cached_property
    def unrestricted(self) -> bool:
        """Sees every record with no condition at all (internal jobs, full backend clients that
        no Consent restricts)."""
        return (
            self.role is not None
            and self.role.patients == "all"
            and not self.role.withheld_labels
            and (self.context.scopes is None or self.context.scopes.complete)
            and not self.consents.restricts
        )

    def allows(self, interaction: Interaction, resource_type: str) -> bool:
        if self.role is None or not self.role.allows(interaction, resource_type):
            return False
        scopes = self.context.scopes
        return scopes is None or scopes.permits(interaction, resource_type)

    def require(self, interaction: Interaction, resource_type: str) -> None:
        # https://hl7.org/fhir/smart-app-launch/scopes-and-launch-context.html: a request outside
        # the granted scopes is refused; the type and interaction are not secrets, so 403 says so.
        if not self.allows(interaction, resource_type):
            raise Forbidden(f"Your role or authorisation does not allow {interaction} on {resource_type}")

    def readable_types(self, interaction: Interaction, candidates: Iterable[str]) -> list[str]:
        return [t for t in candidates if self.allows(interaction, t)]

    def require_operation(self, name: str) -> None:
        if self.role is None or not self.role.allows_operation(name):
            raise Forbidden(f"Your role does not allow the ${name} operation")

    def may_label(self) -> bool:
        return self.role is not None and self.role.label_resources

    # ---------------------------------------------------------------------- record level

    def visible(
        self, resource_type: str, res: Any, aliases: Aliases, interaction: Interaction = "read"
    ) -> ColumnElement[bool] | None:
        """The SQL condition a row of `resource_type` (aliased `res`) must meet to be seen by this
        caller, or None when every row of the type is visible. The caller must have checked the
        type-level permission already."""
        role = self.role
        if role is None:
            return false()
        conditions: list[ColumnElement[bool]] = []
        clinical = resource_type in self.policy.clinical_types
        if clinical:
            patients = self._patient_condition(resource_type, res, aliases, role)
            if patients is not None:
                conditions.append(patients)
            if self.consents.denied_patients:
                denied = self._patients("denied")
                conditions.append(not_(self._in_patients(resource_type, res, aliases, denied)))
        labels = self._label_condition(resource_type, res, aliases, role)
        if labels is not None:
            conditions.append(labels)
        granular = self._granular_condition(interaction, resource_type, res, aliases)
        if granular is not None:
            conditions.append(granular)
        if not conditions:
            return None
        return conditions[0] if len(conditions) == 1 else and_(*conditions)

    def inner_visible(self, resource_type: str, res: Any, aliases: Aliases) -> ColumnElement[bool] | None:
        """What a chain or `_has` may match through (`ConditionBuilder.visible`): the rows of
        `resource_type` this caller could find by searching it, none of a type they may not
        search."""
        if not self.allows("search", resource_type):
            return false()
        return self.visible(resource_type, res, aliases, "search")

    def can_see(self, connection: Connection, resource_type: str, resource_id: str) -> bool:
        """Whether the current row of `resource_type/resource_id` is visible (False if absent)."""
        aliases = Aliases()
        res = aliases(resource)
        condition = self.visible(resource_type, res, aliases)
        query = select(res.c.id).where(res.c.resource_type == resource_type, res.c.id == resource_id)
        if condition is not None:
            query = query.where(condition)
        return connection.execute(query).first() is not None

    def visible_ids(self, connection: Connection, resource_type: str, ids: Sequence[str]) -> set[str]:
        """The subset of `ids` (current resources of one type) this caller may see."""
        if not ids:
            return set()
        aliases = Aliases()
        res = aliases(resource)
        condition = self.visible(resource_type, res, aliases)
        listed = one_of(connection, res.c.id, ids)
        query = select(res.c.id).where(res.c.resource_type == resource_type, listed)
        if condition is not None:
            query = query.where(condition)
        return {row[0] for row in connection.execute(query)}

    def patients_reached(self, connection: Connection, patient_ids: Iterable[str]) -> bool:
        """Whether every patient in `patient_ids` is within this caller's reach (for writes)."""
        wanted = set(patient_ids)
        if not wanted:
            return True
        return self.visible_ids(connection, PATIENT, sorted(wanted)) == wanted

    # ---------------------------------------------------------------------------- parts

    def _patient_condition(
        self, resource_type: str, res: Any, aliases: Aliases, role: RolePolicy
    ) -> ColumnElement[bool] | None:
        by_role = self._reach_condition(resource_type, res, aliases, role)
        scopes = self.context.scopes
        if role.patients != "own" and scopes is not None and scopes.patient_only:
            # patient/ scopes reach only the patient in context, whatever the user's role reaches.
            if self.context.patient is None:
                return false()
            own = self._in_patients(resource_type, res, aliases, self._patients("own"))
            return own if by_role is None else and_(by_role, own)
        return by_role

    def _reach_condition(
        self, resource_type: str, res: Any, aliases: Aliases, role: RolePolicy
    ) -> ColumnElement[bool] | None:
        reach = role.patients
        if reach in ("all", "enterprise"):
            return None
        if reach == "none":
            # Rows of these types that belong to no patient (a clinic's Schedule) stay visible.
            if resource_type == PATIENT:
                return false()
            return not_(self._in_patients(resource_type, res, aliases, None))
        if reach == "own":
            if self.context.patient is None:
                return false()
            return self._in_patients(resource_type, res, aliases, self._patients("own"))
        # care: patients with a relationship to the user's facility, plus break-the-glass ones.
        reached: list[ColumnElement[bool]] = []
        if self.context.facility is not None:
            reached.append(self._in_patients(resource_type, res, aliases, self._cared_for(aliases)))
        if self.context.break_glass:
            reached.append(self._in_patients(resource_type, res, aliases, self._patients("glass")))
        if not reached:
            return false()
        return reached[0] if len(reached) == 1 else or_(*reached)

    def _in_patients(
        self, resource_type: str, res: Any, aliases: Aliases, patients: Sequence[Any] | PatientTest | None
    ) -> ColumnElement[bool]:
        """Rows in the Patient compartment of one of `patients` (a list of ids, or a condition on
        a patient id; None means any patient).
        https://hl7.org/fhir/R4/compartmentdefinition-patient.html"""
        params = self._compartment_params(resource_type)
        options: list[ColumnElement[bool]] = []
        if resource_type == PATIENT:
            options.append(_patient_in(res.c.id, patients))
        if params:
            sr = aliases(search_reference)
            references = self._compartment_references(sr, resource_type, params, patients)
            options.append(exists().where(sr.c.resource_id == res.c.id, *references))
        if not options:
            return false()
        return options[0] if len(options) == 1 else or_(*options)

    def patient_driver(self, resource_type: str, res: Any, aliases: Aliases) -> ColumnElement[bool] | None:
        """For a caller confined to one patient's record (the patient themself, an app with
        patient-level SMART scopes): `res.id IN` the rows of that record, for a search to start
        from. `visible` already requires it, so no result changes; where the database starts does:
        from the patient's few rows instead of every row matching the filters, which SQLite
        (following the shape it is given) checked one by one: 84 against 0.6 ms for
        `Observation?code=` at 1,000 patients. None when the caller is not so confined, and for
        Patient itself (visible through links too)."""
        clinical = resource_type in self.policy.clinical_types
        if not self._confined() or resource_type == PATIENT or not clinical:
            return None
        patients = self._patients("own")
        params = self._compartment_params(resource_type)
        if not params:
            return None
        sr = aliases(search_reference)
        references = self._compartment_references(sr, resource_type, params, patients)
        return res.c.id.in_(select(sr.c.resource_id).where(*references))  # type: ignore[no-any-return]

    def _confined(self) -> bool:
        """Whether this caller reaches one patient's record only, the context's (as
        `_patient_condition` decides)."""
        role = self.role
        if role is None or self.context.patient is None:
            return False
        scopes = self.context.scopes
        return role.patients == "own" or (scopes is not None and scopes.patient_only)

    def _compartment_params(self, resource_type: str) -> list[str]:
        return [p for p in self._compartment.get(resource_type, ()) if p != "{def}"]

    def _compartment_references(
        self, sr: Any, resource_type: str, params: list[str], patients: Sequence[Any] | PatientTest | None
    ) -> list[ColumnElement[bool]]:
        """Reference rows (alias `sr`) putting a `resource_type` row in one of `patients`'
        compartments (None: any patient's)."""
        return [
            sr.c.resource_type == resource_type,
            sr.c.param.in_(params) if len(params) > 1 else sr.c.param == params[0],
            sr.c.target_type == PATIENT,
            _patient_in(sr.c.target_id, patients),
            local_reference(sr, self._match_context()),
        ]

    def _cared_for(self, aliases: Aliases) -> PatientTest:
        """Whether a patient has a care relationship to the user's facility: registered there
        (managingOrganization), with a primary care manager there, or seen there (an Encounter
        whose serviceProvider is the facility). Every facility then sees the whole record.

        Asked of each patient a search meets (three index probes), not as the facility's list of
        patients: that list grows with the facility (every patient ever seen at a hospital), the
        patients a search meets do not. Each probe is fenced (OFFSET 0): unfenced, PostgreSQL may
        turn an EXISTS into a hashed list of all the facility's patients after all, when it
        misjudges a facility's size. At 1,000 patients on PostgreSQL, with one facility that had
        seen all of them, a physician's `Observation?patient&code&_sort=-date` took p50 4.9-5.4
        ms this way against 18-19 ms with the facility's list (10-18 unfenced), and
        `Observation?code=X` over the whole facility 0.5 against 3.4 s."""
        facility: BindParameter[str | None] = bindparam("g_facility", self.context.facility)
        ctx = self._match_context()

        def refers(sr: Any, resource_type: str, param: str, target_type: str) -> list[ColumnElement[bool]]:
            # Only references to this server's resources count (`local_reference`): another
            # server's Patient/X or Organization/F is not this one's.
            return [
                sr.c.resource_type == resource_type,
                sr.c.param == param,
                sr.c.target_type == target_type,
                local_reference(sr, ctx),
            ]

        def cared_for(patient: Any) -> ColumnElement[bool]:
            registered = aliases(search_reference)
            by_registration = _fenced_exists(
                *refers(registered, PATIENT, "organization", "Organization"),
                registered.c.resource_id == patient,
                registered.c.target_id == facility,
            )
            subject, provider = aliases(search_reference), aliases(search_reference)
            by_encounter = _fenced_exists(
                *refers(subject, "Encounter", "patient", PATIENT),
                subject.c.target_id == patient,
                *refers(provider, "Encounter", "service-provider", "Organization"),
                provider.c.resource_id == subject.c.resource_id,
                provider.c.target_id == facility,
            )
            gp, role_org = aliases(search_reference), aliases(search_reference)
            by_primary_care = _fenced_exists(
                *refers(gp, PATIENT, "general-practitioner", "PractitionerRole"),
                gp.c.resource_id == patient,
                *refers(role_org, "PractitionerRole", "organization", "Organization"),
                role_org.c.resource_id == gp.c.target_id,
                role_org.c.target_id == facility,
            )
            return or_(by_registration, by_encounter, by_primary_care)

        return cared_for

    def _label_condition(
        self, resource_type: str, res: Any, aliases: Aliases, role: RolePolicy
    ) -> ColumnElement[bool] | None:
        """Labelled resources the role may not see are invisible, unless break-the-glass opened
        the patient's record (https://hl7.org/fhir/R4/security-labels.html)."""
        withheld = sorted(role.withheld_labels)
        if not withheld:
            return None
        # A patient's Consent may release a label to this caller (for ETH, 42 CFR Part 2's
        # stricter rule applies: see consent_rules); those patients' resources stay visible.
        released = self.consents.released if resource_type in self.policy.clinical_types else {}
        blanket = [label for label in withheld if not released.get(label)]
        hidden: ColumnElement[bool] = true()
        if blanket:
            hidden = not_(self._labelled(resource_type, res, aliases, blanket))
        for label in withheld:
            if released.get(label):
                unlabelled = not_(self._labelled(resource_type, res, aliases, [label]))
                kind = self._released[label]
                consented = self._in_patients(resource_type, res, aliases, self._patients(kind))
                hidden = and_(hidden, or_(unlabelled, consented))
        if self.context.break_glass and resource_type in self.policy.clinical_types:
            opened = self._in_patients(resource_type, res, aliases, self._patients("glass"))
            return or_(hidden, opened)
        return hidden

    @staticmethod
    def _labelled(
        resource_type: str, res: Any, aliases: Aliases, labels: Sequence[Label]
    ) -> ColumnElement[bool]:
        st = aliases(search_token)
        return exists().where(
            st.c.resource_type == resource_type,
            st.c.resource_id == res.c.id,
            st.c.param == "_security",
            _label_in(st, labels),
        )

    def _granular_condition(
        self, interaction: Interaction, resource_type: str, res: Any, aliases: Aliases
    ) -> ColumnElement[bool] | None:
        """SMART v2 granular scopes (`patient/Observation.rs?category=laboratory`)."""
        scopes = self.context.scopes
        if scopes is None:
            return None
        check: Interaction = "search" if interaction == "search" else "read"
        alternatives = scopes.filters(check, resource_type)
        if alternatives is None:
            return None
        if not alternatives:
            return false()
        builder = ConditionBuilder(self._match_context(), aliases)
        parser = SearchParser(self.definitions, self.settings)
        options: list[ColumnElement[bool]] = []
        for filters in alternatives:
            parsed = parser.parse_filters(resource_type, list(filters))
            options.append(and_(true(), *builder.conditions(resource_type, parsed, res)))
        return options[0] if len(options) == 1 else or_(*options)

    # ------------------------------------------------------------- the caller's values

    def search_shape(self) -> Hashable | None:
        """What of this caller decides the conditions `visible`, `inner_visible` and
        `patient_driver` add to a search, so that the search's statements, compiled once, serve
        every caller of the same shape with their own `bound_values`. None when they cannot:
        granular SMART scopes (`patient/Observation.rs?category=laboratory`) write their values
        in, on any type a chain or `_has` may reach."""
        scopes = self.context.scopes
        if scopes is not None and any(grant.filters for grant in scopes.grants):
            return None
        return (
            self.context.role,
            scopes,  # the types it may search (a chain through another matches nothing), patient_only
            self.context.facility is not None,
            tuple(self._released),  # which label each `released<i>` list is for
            tuple((kind, len(ids)) for kind, ids in self._patient_lists.items()),
        )

    def bound_values(self) -> dict[str, Any]:
        """The values the conditions bind, by parameter name (see `search_shape`)."""
        values: dict[str, Any] = {"g_facility": self.context.facility}
        for kind, ids in self._patient_lists.items():
            values.update((f"g_{kind}_{i}", patient) for i, patient in enumerate(ids))
        return values

    @cached_property
    def _patient_lists(self) -> dict[str, list[str]]:
        """The caller's patient lists the conditions may name, by kind (`_patients`)."""
        lists = {
            "own": [self.context.patient] if self.context.patient is not None else [],
            "glass": sorted(self.context.break_glass),
            "denied": sorted(self.consents.denied_patients),
        }
        for label, kind in self._released.items():
            lists[kind] = sorted(self.consents.released[label])
        return lists

    @cached_property
    def _released(self) -> dict[Label, str]:
        """The kind (`_patients`) of the patients whose Consent releases each label to the caller."""
        return {label: f"released{i}" for i, label in enumerate(sorted(self.consents.released))}

    def _patients(self, kind: str) -> list[BindParameter[str]]:
        """A patient list of this caller as parameters named after their place in it."""
        return [bindparam(f"g_{kind}_{i}", patient) for i, patient in enumerate(self._patient_lists[kind])]

    def _match_context(self) -> MatchContext:
        return MatchContext(
            resource_types=self.definitions.resource_types,
            base_url=self.settings.base_url.rstrip("/"),
            dialect=self.dialect,
            now=now().replace(tzinfo=None),
        )


def _fenced_exists(*where: ColumnElement[bool]) -> ColumnElement[bool]:
    """EXISTS a row meeting `where`, kept a probe per outer row (OFFSET 0 stops PostgreSQL from
    planning it as a hashed list or pulling it up into a join)."""
    return exists(select(literal_column("1")).where(*where).offset(0))


def _patient_in(column: Any, patients: Sequence[Any] | PatientTest | None) -> ColumnElement[bool]:
    """`column` (a patient id) is one of `patients` (None: any)."""
    if patients is None:
        return true()
    if callable(patients):
        return patients(column)
    return column.in_(patients)  # type: ignore[no-any-return]


def _label_in(st: Any, labels: Sequence[Label]) -> ColumnElement[bool]:
    if not labels:
        return false()
    return or_(*(and_(st.c.system == system, st.c.code == code) for system, code in labels))
