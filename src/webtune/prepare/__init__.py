"""The prepare stage: records -> cleaned, filtered, deduplicated, rendered, validated chat examples.

  run(cfg, run_dir, inputs, console=None) -> stats       the stage (see pipeline.py for the shard design)
  template_files(cfg_template) -> [Path]                 every Jinja/schema file a template reads

Modules, in the order a record meets them: pipeline.py (the stage: map -> reduce -> map),
mapper.py (one shard's map: the steps composed), steps.py (parse, clean, validate, filter, render,
serialize, word filters, sign, write: one job each, a `Doc` passed between them), shardfiles.py
(what a shard leaves for the reduce), reduce.py (global order, keepers, the second map, the merge),
executors/ (local processes, Ray Data). The steps' rules: clean.py (repairs), filters.py (quality
rules), validate.py (input schema + coercions, chat format), render.py (Jinja tasks), words.py and
dedupe.py (the numpy word view, exact + MinHash LSH).
"""
from .pipeline import PrepareInput, run
from .render import template_files

__all__ = ["PrepareInput", "run", "template_files"]
