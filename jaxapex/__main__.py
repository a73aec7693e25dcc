import sys

from jaxapex.cli import main

sys.exit(main())
