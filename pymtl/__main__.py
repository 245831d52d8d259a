"""``python -m pymtl`` runs the command-line interface."""

from pymtl.cli import main

if __name__ == "__main__":
    main()
