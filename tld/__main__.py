import sys

from tld.cli import main

sys.exit(main())
