"""The NATS client protocol: a sans-IO codec, one asyncio Protocol per connection, and the listener.

Wire-compatible with nats-server 2.x as seen by nats-py and raw sockets; routes through the broker's router.
"""
