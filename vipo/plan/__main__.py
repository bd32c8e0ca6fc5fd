import sys

from vipo.plan.cli import main

sys.exit(main())
