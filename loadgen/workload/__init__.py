"""What an operation calls: the embedded AI Writing Flow V2 simulation (``flow``), a user's
target (``targets``), input records (``inputs``) and the circuit breaker in front of them
(``breaker``)."""
