"""fusionrec adapter package: serving."""
