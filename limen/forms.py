"""Reading what a form, a query string or a JSON body sent, the same way everywhere."""

MAX_DIGITS = 18  # any count LIMEN keeps fits; SQLite's integers hold 19 digits


def whole_number(raw: object, low: int = 0, high: int | None = None) -> int | None:
    """``raw`` (a string or a number) as a whole number from ``low`` to ``high``, or None when
    it is not one: no sign, no decimal point, ASCII digits only."""
    text = str(raw).strip() if raw is not None and not isinstance(raw, bool) else ""
    if not (text.isascii() and text.isdigit()) or len(text) > MAX_DIGITS:
        return None
    value = int(text)
    if value < low or (high is not None and value > high):
        return None
    return value
