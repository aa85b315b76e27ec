"""Helpers shared by the test modules: clients, stand-ins, broker set-ups and condition waits.

Test modules import from here (``from helpers.agents import Agent``), never from one another.
"""
