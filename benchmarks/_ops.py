"""Operations for the benchmarks (referenced by path, so they work under spawn too)."""


def noop(inputs=None):
    return None


def burn_10ms(inputs=None):
    from loadgen.flow import burn_cpu

    burn_cpu(10.0)


def idle(inputs=None):
    import time

    time.sleep(0.05)
