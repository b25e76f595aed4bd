"""Every domain's models, imported so `Base.metadata` is complete (Alembic compares against it).

A new domain adds its `models` import here.
"""

from app.accounts import models as accounts_models
from app.agencies import models as agencies_models
from app.audit import models as audit_models
from app.db import Base
from app.devices import models as devices_models
from app.log import models as log_models
from app.policy import models as policy_models
from app.requests import models as requests_models

metadata = Base.metadata

__all__ = [
    "accounts_models",
    "agencies_models",
    "audit_models",
    "devices_models",
    "log_models",
    "metadata",
    "policy_models",
    "requests_models",
]
