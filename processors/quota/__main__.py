import sys

from processors.quota.cli import main

sys.exit(main(sys.argv[1:]))
