"""Engines for the prepare stage's map / reduce / map (pipeline.py): `local` processes
(`pipeline.run_local`) or Ray Data (`ray_data.run_ray`, `prepare.executor=ray`). Both call the same
per-shard functions and the same keeper decision, so the output bytes do not depend on the engine."""
