from __future__ import annotations

import csv
import json

COLUMNS = ("id", "time", "actor", "user_id", "action", "object_type", "object_id", "via", "ip", "detail")


def write_csv(events, out) -> int:
    """Write the events as CSV (one row each, ``detail`` as JSON) to a text stream; returns the count."""
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    count = 0
    for event in events.iterator():
        writer.writerow([event.id, event.time.isoformat(), event.actor, event.user_id or "", event.action,
                         event.object_type, event.object_id, event.via, event.ip or "",
                         json.dumps(event.detail, sort_keys=True)])
        count += 1
    return count
