"""``python -m rlzoo``: train one run (or sweep with ``-m``)."""

import sys

try:
    from rlzoo.train import main
except KeyboardInterrupt:  # Ctrl-C while torch and Hydra load: nothing has been made yet
    print("rlzoo: interrupted (Ctrl-C) while starting: nothing was made", file=sys.stderr)
    sys.exit(130)

if __name__ == "__main__":
    main()
