"""The root of LIMEN's errors, and the catalogue of every code (which the package has
imported by the time it is asked)."""


class LimenError(Exception):
    code = "INTERNAL_ERROR"
    status = 500
    ws_close = 4500
    sentence = "Something went wrong inside LIMEN. The details are in the server log."

    def __init__(self, message: str | None = None, **details):
        self.message = message or self.sentence
        self.details = details
        super().__init__(self.message)

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "details": self.details}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"

    def close_reason(self) -> str:
        """What a console's close frame says: the code (the page shows its sentence)."""
        return self.code


class RequestRefused(LimenError):
    """An HTTP-level refusal (unknown URL, wrong method, a body too large) with its status."""

    code = "HTTP_ERROR"
    sentence = "LIMEN refused the request."

    # The code for each status Werkzeug may refuse a request with; others are HTTP_ERROR.
    CODES = {
        400: "BAD_REQUEST",
        404: "NOT_FOUND",
        405: "METHOD_NOT_ALLOWED",
        413: "REQUEST_ENTITY_TOO_LARGE",
        415: "UNSUPPORTED_MEDIA_TYPE",
    }

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.code, self.status = self.CODES.get(status, "HTTP_ERROR"), status


def all_errors() -> dict[str, type[LimenError]]:
    """Every error class by its code (the console page maps close reasons with it)."""
    found: dict[str, type[LimenError]] = {}
    todo: list[type[LimenError]] = [LimenError]
    while todo:
        cls = todo.pop()
        found.setdefault(cls.code, cls)
        todo.extend(cls.__subclasses__())
    return found


def error_from(code: str | None, message: str | None) -> LimenError:
    """Rebuild a recorded error (an Operation's error_code and message) as an exception."""
    cls = all_errors().get(code or "", LimenError)
    err = cls.__new__(cls)
    LimenError.__init__(err, message)
    return err


def sentences() -> dict[str, str]:
    """Each code's sentence: the catalogue the console page shows its messages from."""
    return {code: cls.sentence for code, cls in sorted(all_errors().items())}
