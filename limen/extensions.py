"""Flask extensions, created unbound and initialised in ``create_app``."""

from typing import TYPE_CHECKING, Any, cast

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sock import Sock
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import CursorResult, Executable, String, event, inspect
from sqlalchemy.orm import DeclarativeBase

CUT_MARK = "…[cut]"


def cut(value: str, length: int) -> str:
    """``value`` within ``length`` characters: an over-long one is cut, and says so."""
    return value if len(value) <= length else value[: max(0, length - len(CUT_MARK))] + CUT_MARK


class Base(DeclarativeBase):
    pass


def _within_limits(_mapper, _connection, target) -> None:
    """Every stored string keeps its column's length (SQLite would keep any length): an
    over-long one, an audit row's target say, is cut and marked, never refused with a 500."""
    state = inspect(target)
    for attr in state.mapper.column_attrs:
        column = attr.columns[0]
        length = getattr(column.type, "length", None)
        if isinstance(column.type, String) and length and attr.key in state.dict:
            value = state.dict[attr.key]
            if isinstance(value, str) and len(value) > length:
                setattr(target, attr.key, cut(value, length))


db = SQLAlchemy(model_class=Base)
# The base class of the models. At run time it is Flask-SQLAlchemy's db.Model (a subclass of Base
# that names each table after its class, e.g. "login_session"); type checkers see Base, since
# db.Model is made at run time.
if TYPE_CHECKING:
    Model = Base
else:
    Model = db.Model
event.listen(db.Model, "before_insert", _within_limits, propagate=True)
event.listen(db.Model, "before_update", _within_limits, propagate=True)
migrate = Migrate()
sock = Sock()
csrf = CSRFProtect()
# Only the routes that ask for a limit have one (sign-in); the storage is RATELIMIT_STORAGE_URI.
limiter = Limiter(key_func=get_remote_address)
login_manager = LoginManager()
login_manager.login_view = "auth.login"
login_manager.login_message = None


def rows_changed(statement: Executable) -> int:
    """Execute an UPDATE or DELETE in the current session and return how many rows it matched."""
    result = cast("CursorResult[Any]", db.session.execute(statement))
    return result.rowcount
