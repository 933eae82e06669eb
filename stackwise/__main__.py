"""`python -m stackwise` runs the `stackwise` command."""

from .cli import main

main()
