"""Names fixed by the product contracts (contracts.md), spelled out once for the tests."""

# §3: the headers every dead letter carries, besides the original ones.
DLQ_HEADERS = (
    "signout.error.reason",
    "signout.error.code",
    "signout.error.message",
    "signout.original.topic",
    "signout.original.partition",
    "signout.original.offset",
    "signout.original.timestamp",
    "signout.consumer.group",
    "signout.attempts",
    "signout.failed_at",
    "signout.worker.version",
)
