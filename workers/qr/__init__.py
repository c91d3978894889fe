"""Query/Retrieve SCP inside a worker (PS3.4 Annex C): C-FIND, C-MOVE, C-GET.

``service.QueryRetrieve`` is the DIMSE side (requests, cancel, pending responses, flow
control); the matching and index reads are ``workers.query``; sub-operations are
``suboperations`` (counts, statuses, the objects to send) with ``get`` (C-STORE on the
requesting association) and ``move`` (a thread with its own association to the destination).
"""
