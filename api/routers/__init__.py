"""One router module per resource of the control plane."""
