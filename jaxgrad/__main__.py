"""`python -m jaxgrad …` is the `jaxgrad` command (an entry point, like the console script).

The command line drives the studies, so it lives with them in `experiments.cli`; this
file is the one place in `jaxgrad/` that may import `experiments` (it is never imported
by the library itself).
"""

import sys

from experiments.cli import main

sys.exit(main())
