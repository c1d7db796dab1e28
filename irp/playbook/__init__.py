"""The playbook and routing languages: models (models.py), reading files (loader.py), checks (validation.py).

Import from the modules: models.py and problems.py sit below the action registry, validation.py and
loader.py above it (they check step arguments against each action's model).
"""
