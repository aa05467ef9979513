"""The training engine: one loop (a Ray Train worker function), its optimizer and schedule, and
the driver that runs it on a local Ray instance or an existing cluster."""
