"""Accounts: ``signins`` (signing in and out), ``users`` (users, roles, passwords),
``quotas`` (limits, usage and the atomic claim) and ``tokens`` (personal API tokens)."""

from .quotas import QUOTA_FIELDS, Account, Quota, Usage, account_of, claim, claim_growth, quota_of, usage_of
from .signins import check_credentials, live_sign_in, normal_username, sign_in, sign_out, user_for_token, user_named
from .users import (
    ROLES,
    account,
    change_own_password,
    create_user,
    list_users,
    reset_password,
    update_user,
    username_of,
)

__all__ = [
    "QUOTA_FIELDS",
    "ROLES",
    "Account",
    "Quota",
    "Usage",
    "account",
    "account_of",
    "change_own_password",
    "check_credentials",
    "claim",
    "claim_growth",
    "create_user",
    "list_users",
    "live_sign_in",
    "normal_username",
    "quota_of",
    "reset_password",
    "sign_in",
    "sign_out",
    "update_user",
    "usage_of",
    "user_for_token",
    "user_named",
    "username_of",
]
