"""The booking-business simulation behind ``slotguard demo``: workload, checker, modes, figures."""
