"""`python -m kdedge_run` runs the kdedge-run command line."""
from .cli import main

main()
