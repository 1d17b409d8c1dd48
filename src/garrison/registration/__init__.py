"""The staff workspace's domain logic: finding patients, a sponsor's family, one record across the
facilities a patient was treated at, registration with the patient index's duplicate warning,
and the health-information manager's duplicate review, merges and unmerges.

Everything here works through a `Repository` bound to the signed-in user's AccessContext, so the
access policy decides what each page shows; every function that returns patient data adds the
audit records of what it disclosed to `repo.audit` (the web layer writes them, see
`garrison.web.workspace`). The HTTP adapter is `garrison.web.workspace`.
"""
