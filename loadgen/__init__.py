"""loadgen — a multiprocessing load generator and stress tester for Python workloads."""
