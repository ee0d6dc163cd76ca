"""`paystream bench`: the pipeline against a naive baseline and a pass-through ceiling, in one run."""
