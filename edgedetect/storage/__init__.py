"""Storage: tracked events kept on disk ([record]): the event store (index, snapshots,
retention), clips cut from a pre-roll, and the history over HTTP (/events, /api/events)."""
