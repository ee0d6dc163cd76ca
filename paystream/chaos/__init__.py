"""Fault injection: worker processes killed and restarted, services restarted, stages rescaled."""
