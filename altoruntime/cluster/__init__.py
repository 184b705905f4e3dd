"""Running tasks concurrently on a Ray cluster: the driver-side engine (ray_engine.py) and the task
worker each Ray actor hosts (worker.py)."""
