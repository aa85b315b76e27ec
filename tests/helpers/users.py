"""The ``[[auth.users]]`` configuration the isolation tests share: three users with passwords.

Written to a config file and passed with ``--config``.
"""

USERS = """
[[auth.users]]
user = "alice"
password = "alice-pw"

[[auth.users]]
user = "bob"
password = "bob-pw"

[[auth.users]]
user = "carol"
password = "carol-pw"
"""
