"""fusionrec adapter package: pipelines."""
