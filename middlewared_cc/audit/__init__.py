"""The audit trail: a record of every call that changes state, every verify and listing, every login and
every job, chained by a keyed hash so that editing, deleting or reordering records is detected.

The call runner records; no method does. Records join the transaction of the call's write through the
batching writer (store/writer.py), so a write whose record cannot be stored fails with it.
"""

from middlewared_cc.audit.record import Entry
from middlewared_cc.audit.recorder import Auditor, AuditUnavailable

__all__ = ["AuditUnavailable", "Auditor", "Entry"]
