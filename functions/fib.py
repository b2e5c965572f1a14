"""The n-th Fibonacci number (default n=30), computed iteratively."""


def main(event, context=None):
    n = int(event.get("n", 30) if isinstance(event, dict) else (event or 30))
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    if context is not None:
        context.logger.info("fib(%d) computed", n)
    return {"n": n, "fib": a}
