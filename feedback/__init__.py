"""routebandit's memory: decisions, outcomes and feedback, training from logs, MLflow."""

__all__: list[str] = []
