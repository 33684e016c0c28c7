"""`webtune refresh NAME`: fresh web data in, a better model promoted only when it is better.

A refresh is an ordinary run directory whose config carries a `refresh` section (the promoted
version it refreshes), so `webtune resume` continues it and every stage keeps its cache rules:

  source       re-acquired as the promoted version's config says (`source.acquisition` asks for a
               fresh collection, once per refresh: a resume pays nothing twice)
  refresh      diff.py: each record `new`, `changed`, `same` (or `gone`) by its stable key
  prepare      as usual (grounding, dedupe)
  mix          mix/refresh_split.py: same and changed records keep their old split, new ones are split by key;
               unchanged training records are replayed at `refresh.replay_share`; the promoted
               version's test set is kept frozen as the `old` set, the new test set holds only new
               and changed records
  train        warm from the promoted adapter (adapter.py checks that it fits), or `--from-base`
  evaluate     base, promoted and candidate on the old, new and general sets, paired
  decide       decide.py: promote atomically only when the evidence says so; exit code 0 / 3
"""
