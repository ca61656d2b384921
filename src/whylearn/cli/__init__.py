"""The console scripts, one module each, named like the script: ``whylearn-<name>`` runs ``whylearn.cli.<name>:main``."""
