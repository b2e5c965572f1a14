"""Returns its input unchanged."""


def main(event):
    return event
