"""The prepare stage: records -> cleaned, filtered, deduplicated, rendered, validated chat examples.

  run(cfg, run_dir, inputs, console=None) -> stats       the stage (see pipeline.py for the shard design)
  template_files(cfg_template) -> [Path]                 every Jinja/schema file a template reads

Modules: clean.py (repairs), filters.py (quality rules), dedupe.py (exact + MinHash LSH),
render.py (Jinja tasks), validate.py (input schema + coercions, chat format), pipeline.py.
"""
from .pipeline import PrepareInput, run
from .render import template_files

__all__ = ["PrepareInput", "run", "template_files"]
