"""``python -m rlzoo``: train one run (or sweep with ``-m``)."""

from rlzoo.train import main

if __name__ == "__main__":
    main()
