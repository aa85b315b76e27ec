"""IoT to agent: a device publishes an alarm over MQTT, an agent handles it from its mailbox.

The broker maps the MQTT topic ``agent/alarms/inbox`` to the mailbox ``agent.alarms.inbox``, so
a device needs nothing but an MQTT client (here paho-mqtt, not a dependency of the SDK).
"""

import asyncio
import json
import os

from mq9 import Agent, Message

SERVERS = os.environ.get("MQ9_SERVERS", "nats://127.0.0.1:4222")
MQTT_HOST, MQTT_PORT = "127.0.0.1", int(os.environ.get("MQ9_MQTT_PORT", "1883"))

agent = Agent("alarms", servers=SERVERS, description="Reacts to device alarms", mailbox="agent.alarms.inbox")


@agent.on_message()
async def on_alarm(msg: Message) -> None:
    alarm = msg.json()
    print(f"alarm from {alarm['device']}: {alarm['reading']} ({msg.priority})")


def device_publishes(reading: float) -> None:
    """What the device does: one MQTT publish, QoS 1, with the mq9 priority as a user property."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="sensor-7", protocol=mqtt.MQTTv5)
    client.connect(MQTT_HOST, MQTT_PORT)
    client.loop_start()
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("mq9-priority", "critical")]
    info = client.publish(
        "agent/alarms/inbox", json.dumps({"device": "sensor-7", "reading": reading}), qos=1, properties=props
    )
    info.wait_for_publish(5)
    client.loop_stop()
    client.disconnect()


async def main() -> None:
    async with agent:
        await asyncio.to_thread(device_publishes, 97.5)
        await asyncio.sleep(2)


if __name__ == "__main__":
    asyncio.run(main())
