"""robustmq: a communication platform for AI agents.

NATS, MQTT, Kafka and AMQP front-ends on one subject space and one message store.
"""

__version__ = "0.1.0"
