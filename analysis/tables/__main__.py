"""``python -m analysis.tables``: the command of ``analysis.make_tables`` (the table builders are this package)."""

from analysis.make_tables import main

raise SystemExit(main())
