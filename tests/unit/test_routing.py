"""routing.py: a request's Region, pool and budget, decided from the request alone; the settings."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from tests.unit.fakes import make_jwt
from worker import regions
from worker.errors import LOCAL_CODE, PermanentError, Reason
from worker.events import AdminTarget, TokenTarget
from worker.routing import SHARED_ACCOUNT, BudgetKey, Route, Router, issuer_origin
from worker.settings import CognitoSettings, RateSettings, SettingsError, load_settings

EU_POOL = "eu-west-1_AbC123"
US_POOL = "us-east-1_Xyz789"


def router(rate: dict[str, Any] | None = None, **cognito: Any) -> Router:
    return Router(CognitoSettings.model_validate(cognito), RateSettings.model_validate(rate or {}))


def token(**claims: Any) -> TokenTarget:
    return TokenTarget(SecretStr(make_jwt(exp=4_000_000_000, **claims)))


def refused(call: Any, reason: Reason = Reason.TOKEN_INVALID) -> PermanentError:
    with pytest.raises(PermanentError) as caught:
        call()
    assert caught.value.reason is reason
    assert caught.value.code == LOCAL_CODE
    return caught.value


@pytest.mark.parametrize(
    ("issuer", "region", "pool"),
    [
        (f"https://cognito-idp.eu-west-1.amazonaws.com/{EU_POOL}", "eu-west-1", EU_POOL),
        (f"https://issuer-cognito-idp.eu-west-1.amazonaws.com/{EU_POOL}", "eu-west-1", EU_POOL),
        (f"https://cognito-idp.us-east-1.amazonaws.com/{US_POOL}", "us-east-1", US_POOL),
        (
            "https://cognito-idp.us-gov-west-1.amazonaws.com/us-gov-west-1_G0v",
            "us-gov-west-1",
            "us-gov-west-1_G0v",
        ),
    ],
)
def test_both_issuer_forms_give_region_and_pool(issuer: str, region: str, pool: str) -> None:
    assert issuer_origin(issuer) == (region, pool)
    route = router().route(token(iss=issuer))
    assert (route.region, route.pool_id) == (region, pool)


@pytest.mark.parametrize(
    "issuer",
    [
        "https://evil.example/us-east-1_x",
        f"https://cognito-idp.us-east-1.amazonaws.com.evil.com/{US_POOL}",
        f"https://x@cognito-idp.us-east-1.amazonaws.com/{US_POOL}",
        f"https://cognito-idp.us-east-1.amazonaws.com:443/{US_POOL}",
        f"https://cognito-idp.us-east-1.amazonaws.com:8443/{US_POOL}",
        f"http://cognito-idp.us-east-1.amazonaws.com/{US_POOL}",
        f"HTTPS://cognito-idp.us-east-1.amazonaws.com/{US_POOL}",
        f"https://cognito-idp.us-east-1.amazonaws.com/{US_POOL}/",
        f"https://cognito-idp.us-east-1.amazonaws.com/{US_POOL}/x",
        f"https://cognito-idp.us-east-1.amazonaws.com/{US_POOL}?a=b",
        f"https://cognito-idp.us-east-1.amazonaws.com/{US_POOL}#f",
        f"https://cognito-idp.us-east-1.amazonaws.com//{US_POOL}",
        f"https://cognito-idp.us-east-1.amazonaws.com/{US_POOL}\n",
        "https://cognito-idp.xx-fake-9.amazonaws.com/xx-fake-9_abc",
        f"https://cognito-idp.eu-west-1.amazonaws.com/{US_POOL}",  # pool of another Region
        "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_",
        "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_a-b",
        "https://cognito-idp.us-east-1.amazonaws.com.cn/us-east-1_abc",
        "https://cognito-identity.us-east-1.amazonaws.com/us-east-1_abc",
        "https://xissuer-cognito-idp.us-east-1.amazonaws.com/us-east-1_abc",
        "https://cognito-idp.us-east-1.amazonaws.com",
        "",
    ],
)
def test_anything_else_is_token_invalid_without_a_call(issuer: str) -> None:
    refused(lambda: router().route(token(iss=issuer)))


@pytest.mark.parametrize("issuer", [42, 0, ["https://x"], {"a": 1}])
def test_a_non_string_iss_is_token_invalid(issuer: Any) -> None:
    refused(lambda: router().route(token(iss=issuer)))


def test_a_token_that_is_not_a_jwt_is_token_invalid() -> None:
    refused(lambda: router().route(TokenTarget(SecretStr("not-a-jwt"))))


def test_a_token_without_iss_goes_to_the_configured_region_with_no_pool() -> None:
    route = router(region="ap-south-1").route(token())
    assert route == Route("ap-south-1", None, BudgetKey(SHARED_ACCOUNT, "ap-south-1"))


def test_an_admin_request_goes_to_its_pool_ids_region() -> None:
    route = router().route(AdminTarget(EU_POOL, "alice"))
    assert route == Route("eu-west-1", EU_POOL, BudgetKey(SHARED_ACCOUNT, "eu-west-1"))


def test_pool_regions_overrides_the_admin_region_for_replicated_pools() -> None:
    r = router(pool_regions={EU_POOL: "eu-central-1"})
    assert r.route(AdminTarget(EU_POOL, "alice")).region == "eu-central-1"
    assert r.route(AdminTarget(US_POOL, "bob")).region == "us-east-1"
    # A token still goes where its issuer says: replicas answer for the same pool id.
    issuer = f"https://cognito-idp.eu-west-1.amazonaws.com/{EU_POOL}"
    assert r.route(token(iss=issuer)).region == "eu-west-1"


@pytest.mark.parametrize("pool", ["xx-fake-9_abc", "no-underscore", "us-east-1_a.b"])
def test_an_admin_pool_of_no_known_region_is_refused_without_a_call(pool: str) -> None:
    refused(lambda: router().route(AdminTarget(pool, "alice")), Reason.INVALID_PARAMETER)


def test_user_pools_refuses_every_other_pool_without_a_call() -> None:
    r = router(user_pools=[EU_POOL])
    assert r.route(AdminTarget(EU_POOL, "alice")).pool_id == EU_POOL
    eu_issuer = f"https://issuer-cognito-idp.eu-west-1.amazonaws.com/{EU_POOL}"
    assert r.route(token(iss=eu_issuer)).pool_id == EU_POOL
    us_issuer = f"https://cognito-idp.us-east-1.amazonaws.com/{US_POOL}"
    refused(lambda: r.route(AdminTarget(US_POOL, "bob")), Reason.POOL_NOT_ALLOWED)
    refused(lambda: r.route(token(iss=us_issuer)), Reason.POOL_NOT_ALLOWED)
    # A token without iss cannot be shown to belong to an allowed pool.
    refused(lambda: r.route(token()), Reason.POOL_NOT_ALLOWED)


def test_pools_of_one_region_share_a_budget_unless_accounts_maps_them() -> None:
    other_eu = "eu-west-1_Other9"
    shared = router()
    keys = {shared.route(AdminTarget(p, "u")).budget for p in (EU_POOL, other_eu)}
    assert keys == {BudgetKey(SHARED_ACCOUNT, "eu-west-1")}
    mapped = router(accounts={EU_POOL: "prod", other_eu: "staging"})
    eu_issuer = f"https://cognito-idp.eu-west-1.amazonaws.com/{EU_POOL}"
    assert mapped.route(token(iss=eu_issuer)).budget == BudgetKey("prod", "eu-west-1")
    assert mapped.route(AdminTarget(other_eu, "u")).budget == BudgetKey("staging", "eu-west-1")
    assert mapped.route(AdminTarget(US_POOL, "u")).budget == BudgetKey(SHARED_ACCOUNT, "us-east-1")


def test_each_budget_is_per_second_unless_rate_regions_overrides_its_region() -> None:
    r = router(rate={"per_second": 20, "regions": {"eu-west-1": 5}})
    assert r.budget_for(BudgetKey("prod", "eu-west-1")) == 5
    assert r.budget_for(BudgetKey(SHARED_ACCOUNT, "eu-west-1")) == 5
    assert r.budget_for(BudgetKey("prod", "us-east-1")) == 20


def test_admin_roles_by_pool_id_before_account_name() -> None:
    prod_role = "arn:aws:iam::111111111111:role/signout"
    pool_role = "arn:aws:iam::222222222222:role/signout-eu"
    r = router(
        accounts={EU_POOL: "prod", "eu-west-1_Other9": "prod"},
        admin_roles={"prod": prod_role, EU_POOL: pool_role},
    )
    assert r.route(AdminTarget(EU_POOL, "u")).role_arn == pool_role
    assert r.route(AdminTarget("eu-west-1_Other9", "u")).role_arn == prod_role
    assert r.route(AdminTarget(US_POOL, "u")).role_arn is None


def test_known_regions_come_from_botocore() -> None:
    known = regions.dns_suffixes()
    assert {"us-east-1", "eu-west-1", "us-gov-west-1"} <= set(known)
    assert "xx-fake-9" not in known


# Settings: both list spellings, and one line naming the variable for a bad value.


@pytest.mark.parametrize("value", [f"{EU_POOL}, {US_POOL}", f'["{EU_POOL}", "{US_POOL}"]'])
def test_user_pools_reads_a_json_list_or_comma_separated(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("SIGNOUT_COGNITO__USER_POOLS", value)
    assert load_settings().cognito.user_pools == {EU_POOL, US_POOL}


def test_maps_are_read_from_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIGNOUT_COGNITO__ENDPOINT_URL", '{"eu-west-1": "http://127.0.0.1:1"}')
    monkeypatch.setenv("SIGNOUT_COGNITO__POOL_REGIONS", f'{{"{EU_POOL}": "eu-central-1"}}')
    monkeypatch.setenv("SIGNOUT_RATE__REGIONS", '{"eu-west-1": 5}')
    settings = load_settings()
    assert settings.cognito.endpoint_url == {"eu-west-1": "http://127.0.0.1:1"}
    assert settings.cognito.pool_regions == {EU_POOL: "eu-central-1"}
    assert settings.rate.regions == {"eu-west-1": 5.0}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SIGNOUT_COGNITO__USER_POOLS", "xx-fake-9_abc"),
        ("SIGNOUT_COGNITO__USER_POOLS", "not-a-pool"),
        ("SIGNOUT_COGNITO__POOL_REGIONS", f'{{"{EU_POOL}": "xx-fake-9"}}'),
        ("SIGNOUT_COGNITO__POOL_REGIONS", "not json"),
        ("SIGNOUT_COGNITO__ACCOUNTS", '{"bad-pool": "prod"}'),
        ("SIGNOUT_COGNITO__ACCOUNTS", f'{{"{EU_POOL}": ""}}'),
        ("SIGNOUT_COGNITO__ADMIN_ROLES", '{"prod": "arn:aws:iam::1:role/x"}'),
        ("SIGNOUT_COGNITO__ENDPOINT_URL", '{"xx-fake-9": "http://127.0.0.1:1"}'),
        ("SIGNOUT_RATE__REGIONS", '{"xx-fake-9": 5}'),
        ("SIGNOUT_RATE__REGIONS", '{"eu-west-1": 0}'),
    ],
)
def test_a_bad_new_setting_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"invalid setting {variable}:")
    assert "\n" not in message
