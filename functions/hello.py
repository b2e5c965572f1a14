"""Says hello: prints a greeting and returns it."""


def main(event, context=None):
    name = event.get("name", "world") if isinstance(event, dict) else (event or "world")
    greeting = f"Hello, {name}!"
    print(greeting)
    return {"greeting": greeting}
