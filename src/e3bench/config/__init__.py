"""Run configuration: the schema, the one builder that validates it against this installation, YAML files with line numbers, the one ``--set`` parser and the task-spec syntax."""
