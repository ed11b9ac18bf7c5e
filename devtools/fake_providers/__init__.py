"""Local HTTP servers that speak the providers' real contracts (``../shared/contracts/``), for
tests and benchmarks: they answer like the provider, including its errors, and record what they
received."""
