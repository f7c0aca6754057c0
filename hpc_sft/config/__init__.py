"""User input and config: the one parameter table (spec), SlurmOptions, TOML recipes, data checks, validation."""
