"""Compare what fastrnn and torch raise: one helper for every error-message test."""


def outcome(fn):
    """(exception type, message) of fn(), or ('ok', None)."""
    try:
        fn()
    except Exception as e:
        return type(e), str(e)
    return "ok", None
