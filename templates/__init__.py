"""Distribution templates: each module with a NAME and a run_config() becomes distributions/<NAME>/run.yaml
(scripts/gen_distributions.py)."""
