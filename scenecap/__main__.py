import sys

from scenecap.cli import main

sys.exit(main())
