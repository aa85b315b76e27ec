"""The AMQP 0-9-1 front-end: RabbitMQ's exchanges, queues and acknowledgements on the shared store and subjects.

``codec`` frames bytes, ``routing`` picks the queues of a publish, ``queues`` holds and hands out
messages, ``persistence`` keeps durable definitions and messages in the store, ``listener`` is the
thin asyncio part.
"""
