"""Quality, speed and load benchmarks; each writes benchmarks/reports/<name>.{json,md}."""
