"""Flask extensions, created unbound and initialised in ``create_app``."""

from typing import TYPE_CHECKING, Any, cast

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sock import Sock
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import CursorResult, Executable
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
# The base class of the models. At run time it is Flask-SQLAlchemy's db.Model (a subclass of Base
# that names each table after its class, e.g. "login_session"); type checkers see Base, since
# db.Model is made at run time.
if TYPE_CHECKING:
    Model = Base
else:
    Model = db.Model
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
