from tests.db import database

__all__ = ["database"]
