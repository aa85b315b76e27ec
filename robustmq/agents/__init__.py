"""The agent layer: the mq9 subject space (mailboxes, agent registry) and agent discovery.

Services here live on the router like any other subscriber; they hold no sockets.
"""
