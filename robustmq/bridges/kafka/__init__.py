"""The Kafka front-end: a single-node Kafka 3.0 cluster view of the store's streams.

Codec (bytes <-> requests/responses), record batches, the group coordinator, producer state and
the API service are pure; ``listener`` is the thin asyncio Protocol around them.
"""
