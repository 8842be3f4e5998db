"""Kubeflow Pipelines v2 lightweight components: one per verb, each a thin call into fusionrec.steps."""

from components.evaluate import evaluate
from components.featurize import featurize
from components.ingest import ingest
from components.package import package
from components.search import search
from components.split import split
from components.train import train

COMPONENTS = {f.name: f for f in (ingest, split, featurize, search, train, evaluate, package)}

__all__ = ["COMPONENTS", "evaluate", "featurize", "ingest", "package", "search", "split", "train"]
