"""``python -m robustmq`` is the ``robustmq`` command."""

from robustmq.cli import main

raise SystemExit(main())
