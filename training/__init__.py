"""drone_training — training DRONE networks and designing schedules from EPG simulations."""

__all__: list[str] = []
