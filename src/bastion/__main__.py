"""``python -m bastion`` is the ``bastion`` command."""

from bastion.cli.main import main

if __name__ == "__main__":  # not when a spawned worker process (assess --workers) imports it as __mp_main__
    main()
