"""Training loops, optimisers and schedules."""
