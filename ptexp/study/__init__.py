"""``python -m ptexp.study``: every (task, model, method) cell of an experiment tuned on the selection split within
one budget, then the seeds of each cell's chosen recipe, all under one MLflow study run (README, "Studies")."""
