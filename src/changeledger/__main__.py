"""``python -m changeledger`` runs the command line."""

from changeledger.cli.main import main

main()
