"""DIMSE (PS3.7): command sets, status codes, message fragmentation and reassembly.

Imports only the stdlib, ``appliance.errors`` and ``appliance.ul`` (STYLE 2.3).
"""
