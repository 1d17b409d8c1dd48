"""The patient portal's domain logic: whose record is in view (self or family), the health-record
views, family access and taking the record away. Everything works through a Repository bound to
the patient's or proxy's own AccessContext, so the portal shows only what the access policy allows.
The HTTP side is `garrison.web.portal`.
"""
