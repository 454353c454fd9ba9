import sys

from .interrupts import install

install()  # first: a Ctrl-C during the imports below is not lost (interrupts.py says why)

from .cli import main  # noqa: E402

sys.exit(main())
