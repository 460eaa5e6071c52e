import sys

from pyramidal.cli import main

sys.exit(main())
