"""One router module per resource of the control plane.

Each defines ``router``; ``api.app`` includes them under ``/api/v1`` in order of use.
"""
