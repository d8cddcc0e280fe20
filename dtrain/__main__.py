"""``python -m dtrain``: the same command line as the ``dtrain`` console script."""

from .cli import main

if __name__ == "__main__":
    main()
