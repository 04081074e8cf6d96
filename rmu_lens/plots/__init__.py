"""matplotlib figures: each function takes results and returns a Figure."""
