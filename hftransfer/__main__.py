import sys

from hftransfer.cli import main

sys.exit(main())
