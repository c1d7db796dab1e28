"""The playbook and routing languages: models.py (the YAML as pydantic models and their JSON schemas),
loader.py (reading files, FILE:LINE:COL), validation.py (what the schema cannot check).

Import from the modules: models.py, problems.py and templates.py sit below the action registry;
validation.py and loader.py above it (they check step arguments against each action's model).
"""
