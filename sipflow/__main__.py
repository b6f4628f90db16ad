"""`python -m sipflow` runs the command line."""
from sipflow.cli import main

if __name__ == "__main__":
    main()
