"""The durable message store, queue and channel pipeline (source -> filter -> transform -> destinations)."""
