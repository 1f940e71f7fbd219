"""The people registry: persons, their templates, and keeping terminals in step.

The pure parts (records, validation) are re-exported here; the service that queues the
device commands is :mod:`zkserver.persons.service`, the CSV codec :mod:`zkserver.persons.csvio`.
"""

from zkserver.persons.model import ALL, NewTemplate, Person, PersonTemplate, SyncEntry
from zkserver.persons.validate import PersonError, check_fits, person_fields

__all__ = [
    "ALL",
    "NewTemplate",
    "Person",
    "PersonError",
    "PersonTemplate",
    "SyncEntry",
    "check_fits",
    "person_fields",
]
