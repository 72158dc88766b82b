"""deploy/iam: least privilege, a trust policy for exactly the worker's ServiceAccount, and the
fact the README states: GlobalSignOut needs no IAM (botocore sends it unsigned)."""

from __future__ import annotations

import json
import re
from typing import Any

import botocore.session
import yaml

from tests.deploy.conftest import K8S, REPO

IAM = REPO / "deploy" / "iam"
POOL_ARN = re.compile(r"arn:aws:cognito-idp:[a-z0-9-]+:\d{12}:userpool/[a-z0-9-]+_[A-Za-z0-9]+")


def load(name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((IAM / name).read_text())
    return document


ROLE_ARN = re.compile(r"arn:aws:iam::\d{12}:role/[\w+=,.@/-]+")


def statements(name: str) -> dict[str, dict[str, Any]]:
    policy = load(name)
    assert policy["Version"] == "2012-10-17"
    return {statement["Action"]: statement for statement in policy["Statement"]}


def test_policy_allows_only_admin_sign_out_on_named_pools_and_named_admin_roles() -> None:
    by_action = statements("signout-worker-policy.json")
    assert set(by_action) == {"cognito-idp:AdminUserGlobalSignOut", "sts:AssumeRole"}
    for statement in by_action.values():
        assert statement["Effect"] == "Allow"
        assert not {"NotAction", "NotResource", "Condition"} & statement.keys()
        assert statement["Resource"]
    pools = by_action["cognito-idp:AdminUserGlobalSignOut"]["Resource"]
    assert all(POOL_ARN.fullmatch(arn) for arn in pools), pools
    roles = by_action["sts:AssumeRole"]["Resource"]
    assert all(ROLE_ARN.fullmatch(arn) for arn in roles), roles


def test_admin_roles_trust_only_the_worker_role_and_sign_out_only() -> None:
    (trust,) = load("admin-role-trust-policy.json")["Statement"]
    assert trust["Action"] == "sts:AssumeRole"
    worker_role = trust["Principal"]["AWS"]
    assert ROLE_ARN.fullmatch(worker_role), worker_role
    assert trust["Condition"]["StringEquals"]["sts:RoleSessionName"] == "signout-worker"
    prod = (K8S / "overlays/prod/kustomization.yaml").read_text()
    assert worker_role in prod, "the admin roles trust the prod ServiceAccount's role"
    (admin,) = load("admin-role-policy.json")["Statement"]
    assert admin["Action"] == "cognito-idp:AdminUserGlobalSignOut"
    assert all(POOL_ARN.fullmatch(arn) for arn in admin["Resource"])
    assumed = statements("signout-worker-policy.json")["sts:AssumeRole"]["Resource"]
    accounts = {arn.split(":")[4] for arn in assumed}
    assert {arn.split(":")[4] for arn in admin["Resource"]} <= accounts


def test_trust_policy_admits_only_the_worker_service_account() -> None:
    (statement,) = load("irsa-trust-policy.json")["Statement"]
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert ":oidc-provider/oidc.eks." in statement["Principal"]["Federated"]
    conditions = statement["Condition"]["StringEquals"]
    subjects = [v for k, v in conditions.items() if k.endswith(":sub")]
    audiences = [v for k, v in conditions.items() if k.endswith(":aud")]
    prod = yaml.safe_load((K8S / "overlays/prod/kustomization.yaml").read_text())
    account = yaml.safe_load((K8S / "base/serviceaccount.yaml").read_text())
    expected = f"system:serviceaccount:{prod['namespace']}:{account['metadata']['name']}"
    assert subjects == [expected]
    assert audiences == ["sts.amazonaws.com"]


def test_global_sign_out_is_unsigned_and_admin_sign_out_is_not() -> None:
    model = botocore.session.get_session().get_service_model("cognito-idp")
    assert model.operation_model("GlobalSignOut").auth_type == "none"
    assert model.operation_model("AdminUserGlobalSignOut").auth_type != "none"
