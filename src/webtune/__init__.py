"""webtune: web data to a fine-tuned domain model, declared in YAML."""

__version__ = "0.1.0"
