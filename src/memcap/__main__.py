import sys

from memcap.cli import main

sys.exit(main())
