"""Sample models for wbc-audit: a small Keras CNN and the script that trains it on ``sample_data/wbc5``."""
