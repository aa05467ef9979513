"""Tables and plots for the run report."""
