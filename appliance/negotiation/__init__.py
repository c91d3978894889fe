"""Association negotiation (PS3.8 §9.3.2-9.3.4, PS3.7 Annex D): which presentation contexts,
transfer syntaxes and user-information items this appliance accepts.

Imports only the stdlib, ``appliance.errors``, ``appliance.ul`` and ``appliance.dimse``
(STYLE 2.3); ``sop_classes`` is generated plain data, not pydicom.
"""
