"""MQTT 3.1, 3.1.1 and 5.0 on the shared subject space.

A sans-IO codec (``codec``), the session state (``session``), and a thin asyncio listener (``listener``).
"""
