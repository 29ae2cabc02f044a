"""`python -m jaxgrad …` is the `jaxgrad` command."""
import sys

from jaxgrad.cli import main

sys.exit(main())
