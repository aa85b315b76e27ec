"""``python -m mq9 run module:agent``: the same as the ``mq9`` command."""

from mq9.cli import main

raise SystemExit(main())
