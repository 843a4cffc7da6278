import sys

from obskit.cli import main

sys.exit(main())
