"""The one image every fusionrec component runs in (built from components/Dockerfile)."""

from fusionrec import __version__

IMAGE_REPO = "ghcr.io/fusionrec/fusionrec"
IMAGE = f"{IMAGE_REPO}:{__version__}"
