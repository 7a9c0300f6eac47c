"""``python -m tickcast.cli``: the same command line as ``tickcast``."""

from tickcast.cli import app

if __name__ == "__main__":
    app()
